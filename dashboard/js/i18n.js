// UI strings in Japanese and English. The language follows the browser unless the
// person picked one with the switch; the choice is remembered in this browser.

const STRINGS = {
  en: {
    app_title: 'Mimamori',
    login_title: 'Sign in',
    username: 'User name',
    password: 'Password',
    sign_in: 'Sign in',
    sign_out: 'Sign out',
    login_failed: 'User name or password is wrong.',
    live: 'live',
    reconnecting: 'reconnecting…',
    nav_alerts: 'Alerts',
    nav_map: 'Map',
    nav_board: 'Residents',
    nav_admin_residents: 'Manage residents',
    nav_admin_devices: 'Devices',
    nav_admin_users: 'Users',
    sound_on: 'Sound on',
    sound_off: 'Sound muted',
    push_enable: 'Enable notifications on this device',
    push_on: 'Notifications on',
    push_disable: 'Turn off notifications on this device',
    push_denied: 'Notifications are blocked in this browser’s settings',
    push_unsupported: 'This browser cannot receive push notifications',
    push_failed: 'Could not enable notifications',
    push_no_service: 'the browser’s push service did not answer',
    no_alerts: 'No open alerts.',
    state_open: 'Open',
    state_unanswered: 'Nobody answered',
    state_acknowledged: 'In progress',
    state_resolved: 'Resolved',
    sev_critical: 'Critical',
    sev_high: 'High',
    sev_warning: 'Warning',
    kind_inactivity: 'No activity',
    kind_no_morning_activity: 'Not up this morning',
    kind_geofence_exit: 'Left safe zone',
    kind_sos: 'SOS button',
    kind_device_offline: 'Device offline',
    kind_low_battery: 'Low battery',
    kind_dwell: 'Long stay in one room',
    kind_night_exit: 'Went out at night',
    dev_motion: 'Motion sensor', dev_door: 'Door sensor', dev_gps: 'GPS tracker', dev_button: 'SOS button', dev_gateway: 'Gateway',
    acknowledge: 'Acknowledge',
    resolve: 'Resolve',
    note: 'Note',
    note_placeholder: 'What was done (optional)',
    confirm: 'Confirm',
    cancel: 'Cancel',
    since: 'since',
    opened: 'Opened',
    acknowledged_by: 'Acknowledged by',
    resolved_by: 'Resolved by',
    resolution: 'Outcome',
    history: 'History',
    action_opened: 'Opened', action_updated: 'Updated', action_acknowledged: 'Acknowledged', action_resolved: 'Resolved', action_escalated: 'Escalated', action_reminded: 'Reminder sent', action_unanswered: 'Nobody answered', action_held: 'Held for quiet hours', action_noted: 'Note', action_assigned: 'Assigned', action_snoozed: 'Snoozed',
    state: 'State',
    details: 'Details',
    where: 'Where',
    last_activity: 'Last activity',
    last_position: 'Last position',
    location_inside: 'At home / in safe zone',
    location_outside: 'Outside safe zones',
    location_unknown: 'Location unknown',
    devices: 'Devices',
    battery: 'Battery',
    online: 'online',
    offline: 'offline',
    never: 'never',
    activity_7d: 'Activity per hour, last 7 days',
    alert_history: 'Alert history',
    resident: 'Resident',
    open_alerts: 'open alerts',
    ago_s: '{n} s ago', ago_m: '{n} min ago', ago_h: '{n} h {m} min ago', ago_d: '{n} d ago',
    name: 'Name',
    timezone: 'Time zone',
    home: 'Home (lat, lon)',
    create: 'Create',
    save: 'Save',
    delete: 'Delete',
    rules: 'Rule settings',
    geofences: 'Safe zones',
    draw_polygon: 'Draw polygon',
    draw_circle: 'Draw circle',
    finish_polygon: 'Finish polygon',
    radius_m: 'Radius (m)',
    zone_name: 'Zone name',
    draw_hint: 'Click on the map to place points.',
    kind: 'Kind',
    rotate_secret: 'Rotate secret',
    revoke: 'Revoke',
    secret_once: 'Copy this secret now: it is shown only once.',
    copy: 'Copy',
    copied: 'Copied',
    role: 'Role',
    residents_of: 'Residents (family only)',
    saved: 'Saved.',
    error: 'Error',
    not_found: 'Not found.',
    language: '日本語',
    tiles_off: 'Map tiles unavailable; markers and zones still shown.',
    trail: 'Trail',
    resident_page: 'Resident page',
    alert_page: 'Alert',
    confirm_delete: 'Delete this? It cannot be undone.',
  },
  ja: {
    app_title: '見守り',
    login_title: 'ログイン',
    username: 'ユーザー名',
    password: 'パスワード',
    sign_in: 'ログイン',
    sign_out: 'ログアウト',
    login_failed: 'ユーザー名またはパスワードが違います。',
    live: '接続中',
    reconnecting: '再接続中…',
    nav_alerts: '通報一覧',
    nav_map: '地図',
    nav_board: '利用者一覧',
    nav_admin_residents: '利用者の設定',
    nav_admin_devices: '機器',
    nav_admin_users: 'ユーザー',
    sound_on: '通知音オン',
    sound_off: '通知音オフ',
    push_enable: 'この端末で通知を受け取る',
    push_on: '通知オン',
    push_disable: 'この端末の通知をやめる',
    push_denied: 'このブラウザの設定で通知がブロックされています',
    push_unsupported: 'このブラウザはプッシュ通知を受け取れません',
    push_failed: '通知を有効にできませんでした',
    push_no_service: 'ブラウザのプッシュサービスから応答がありません',
    no_alerts: '未対応の通報はありません。',
    state_open: '未対応',
    state_unanswered: '応答なし',
    state_acknowledged: '対応中',
    state_resolved: '解決済み',
    sev_critical: '緊急',
    sev_high: '重要',
    sev_warning: '注意',
    kind_inactivity: '動きがない',
    kind_no_morning_activity: '朝の活動がない',
    kind_geofence_exit: '安全エリア外へ外出',
    kind_sos: '緊急ボタン',
    kind_device_offline: '機器の通信途絶',
    kind_low_battery: '電池残量低下',
    kind_dwell: '同じ部屋に長時間',
    kind_night_exit: '夜間の外出',
    dev_motion: '人感センサー', dev_door: 'ドアセンサー', dev_gps: 'GPS端末', dev_button: '緊急ボタン', dev_gateway: 'ゲートウェイ',
    acknowledge: '確認する',
    resolve: '解決する',
    note: 'メモ',
    note_placeholder: '対応内容（任意）',
    confirm: '実行',
    cancel: 'キャンセル',
    since: '発生',
    opened: '発生時刻',
    acknowledged_by: '確認者',
    resolved_by: '解決者',
    resolution: '対応結果',
    history: '経過',
    action_opened: '発生', action_updated: '更新', action_acknowledged: '確認', action_resolved: '解決', action_escalated: 'エスカレーション', action_reminded: '再通知', action_unanswered: '応答なし', action_held: '夜間のため保留', action_noted: 'メモ', action_assigned: '担当', action_snoozed: '一時停止',
    state: '状態',
    details: '詳細',
    where: '場所',
    last_activity: '最後の活動',
    last_position: '最後の位置',
    location_inside: '在宅・安全エリア内',
    location_outside: '安全エリア外',
    location_unknown: '位置不明',
    devices: '機器',
    battery: '電池',
    online: '通信中',
    offline: '通信途絶',
    never: 'なし',
    activity_7d: '時間帯別の活動（過去7日間）',
    alert_history: '通報の履歴',
    resident: '利用者',
    open_alerts: '件の通報',
    ago_s: '{n}秒前', ago_m: '{n}分前', ago_h: '{n}時間{m}分前', ago_d: '{n}日前',
    name: '氏名',
    timezone: 'タイムゾーン',
    home: '自宅（緯度, 経度）',
    create: '登録',
    save: '保存',
    delete: '削除',
    rules: '見守り設定',
    geofences: '安全エリア',
    draw_polygon: '多角形を描く',
    draw_circle: '円を描く',
    finish_polygon: '多角形を確定',
    radius_m: '半径（m）',
    zone_name: 'エリア名',
    draw_hint: '地図をクリックして点を置いてください。',
    kind: '種類',
    rotate_secret: '認証情報を再発行',
    revoke: '無効にする',
    secret_once: 'この認証情報は一度しか表示されません。今すぐコピーしてください。',
    copy: 'コピー',
    copied: 'コピーしました',
    role: '役割',
    residents_of: '対象の利用者（家族のみ）',
    saved: '保存しました。',
    error: 'エラー',
    not_found: '見つかりません。',
    language: 'English',
    tiles_off: '地図画像を読み込めません。位置とエリアは表示しています。',
    trail: '移動経路',
    resident_page: '利用者のページ',
    alert_page: '通報',
    confirm_delete: '削除しますか？元に戻せません。',
  },
};

const KEY = 'mimamori.lang';

function initial() {
  const saved = localStorage.getItem(KEY);
  if (saved === 'ja' || saved === 'en') return saved;
  return (navigator.language || 'en').toLowerCase().startsWith('ja') ? 'ja' : 'en';
}

let lang = initial();

export function currentLang() {
  return lang;
}

export function setLang(l) {
  lang = l === 'ja' ? 'ja' : 'en';
  localStorage.setItem(KEY, lang);
  document.documentElement.lang = lang;
}

/** The string for `key` in the current language, with `{name}` placeholders filled. */
export function t(key, vars = {}) {
  const s = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}

/** "5 min ago" for a moment in the past. */
export function ago(iso, now = Date.now()) {
  if (!iso) return t('never');
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (s < 60) return t('ago_s', { n: s });
  if (s < 3600) return t('ago_m', { n: Math.floor(s / 60) });
  if (s < 86400) return t('ago_h', { n: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
  return t('ago_d', { n: Math.floor(s / 86400) });
}

/** A date and time in the person's language. */
export function when(iso) {
  if (!iso) return t('never');
  return new Date(iso).toLocaleString(lang === 'ja' ? 'ja-JP' : 'en-GB');
}

document.documentElement.lang = lang;
