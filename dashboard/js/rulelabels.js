// Labels, units and help for every rule setting, in Japanese and English. A setting
// not listed here still shows, under its key, so a new setting is never hidden.

import { currentLang } from './i18n.js';

/** path → [English label, Japanese label, unit ('s', 'm', '%', 'time', '' ), help en, help ja] */
const LABELS = {
  'inactivity': ['No movement at home', '動きがない時の見守り'],
  'inactivity.enabled': ['Watch for no movement', '無活動を見守る'],
  'inactivity.day_threshold_s': ['Daytime: alert after no movement for', '日中：動きがない時間の上限', 's', 'Field practice: 3–6 h for staff', '目安：職員対応なら3〜6時間'],
  'inactivity.night_threshold_s': ['Night: alert after no movement for', '夜間：動きがない時間の上限', 's'],
  'inactivity.day_starts': ['Day starts at', '日中の開始', 'time'],
  'inactivity.night_starts': ['Night starts at', '夜間の開始', 'time'],
  'inactivity.morning_deadline': ['Up by (morning check)', '朝の活動確認の期限', 'time', 'Empty: no morning check', '空欄：朝の確認なし'],
  'inactivity.pause_when_away': ['Pause while away from home', '外出中は一時停止'],
  'inactivity.sleep_rooms': ['Bedrooms', '寝室'],
  'geofence': ['Safe zone (GPS)', '安全エリア（GPS）'],
  'geofence.confirm_fixes': ['Fixes needed to confirm an exit', '外出と判定する連続測位数', ''],
  'geofence.max_accuracy_m': ['Ignore fixes less accurate than', 'この精度より粗い測位は無視', 'm'],
  'geofence.reentry_margin_m': ['Back inside only this far within the zone', 'エリア内にこの距離入って帰宅とみなす', 'm'],
  'geofence.night_starts': ['Exit is critical from', '外出を緊急とする開始時刻', 'time'],
  'geofence.night_ends': ['Exit is critical until', '外出を緊急とする終了時刻', 'time'],
  'geofence.unknown_accuracy_m': ['Accuracy assumed when a fix gives none', '精度不明の測位に仮定する精度', 'm'],
  'geofence.position_worsening_factor': ['Keep the alert position unless a fix is this many times better', '測位精度がこの倍率以上悪い時は位置を更新しない', '×'],
  'offline': ['Device silent for', '機器の通信途絶', ''],
  'offline.motion_s': ['Motion sensor', '人感センサー', 's'],
  'offline.door_s': ['Door sensor', 'ドアセンサー', 's'],
  'offline.button_s': ['SOS button', '緊急ボタン', 's'],
  'offline.gps_s': ['GPS tracker', 'GPS端末', 's'],
  'offline.gateway_s': ['Gateway', 'ゲートウェイ', 's'],
  'offline.tag_s': ['BLE tag', 'BLEタグ', 's'],
  'offline.receiver_s': ['BLE receiver', 'BLE受信機', 's'],
  'dwell': ['Long stay in one room', '同じ部屋に長時間'],
  'dwell.enabled': ['Watch for long stays', '長時間の滞在を見守る'],
  'dwell.limits_s': ['Longest stay per room', '部屋ごとの滞在上限', 's'],
  'night_exit': ['Going out at night', '夜間の外出'],
  'night_exit.enabled': ['Watch the entrance door at night', '夜間の玄関ドアを見守る'],
  'night_exit.from': ['Watch from', '見守り開始', 'time'],
  'night_exit.until': ['Watch until', '見守り終了', 'time'],
  'night_exit.confirm_s': ['Out if no movement inside within', '屋内で動きがなければ外出と判定するまで', 's'],
  'low_battery_pct': ['Low battery below', '電池残量の警告', '%'],
};

const UNIT = { s: ['seconds', '秒'], m: ['metres', 'm'], '%': ['%', '%'], time: ['HH:MM', 'HH:MM'], '×': ['times', '倍'] };

/** {label, unit, help} of a setting at `path` (an array of keys), in the current language. */
export function ruleLabel(path) {
  const ja = currentLang() === 'ja';
  const exact = LABELS[path.join('.')];
  // Per-room entries of a map ("dwell.limits_s.bathroom") take their parent's unit.
  const parent = LABELS[path.slice(0, -1).join('.')];
  const entry = exact ?? (parent && [path[path.length - 1], path[path.length - 1], parent[2]]) ?? [path[path.length - 1], path[path.length - 1]];
  const [en, jaLabel, unit = '', helpEn = '', helpJa = ''] = entry;
  return {
    label: ja ? jaLabel : en,
    unit: unit ? UNIT[unit][ja ? 1 : 0] : '',
    seconds: unit === 's',
    help: ja ? helpJa : helpEn,
  };
}
