// The alarm a night desk cannot miss. While a critical alert is unacknowledged a tone
// repeats, a little higher each time, until someone acknowledges it; a high one sounds
// once, and again when the hub escalates it (the stream marks it `unanswered`). The
// title and the icon flash while anything waits, a notification appears when the tab is
// hidden, and when the browser holds the sound back (it does until the page was
// clicked, after every reload) the page says so in a banner until sound works.

import { t } from './i18n.js';
import { unacknowledged } from './util.js';

/** How often the critical tone repeats. */
export const REPEAT_MS = 2000;
/** Each repeat rises by this ratio, up to RISE_STEPS steps. */
const RISE = 1.12;
const RISE_STEPS = 8;
const BASE_HZ = 660;

const ICON_CALM = iconUrl('#1565c0');
const ICON_ALERT = iconUrl('#c62828');

function iconUrl(colour) {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="${colour}"/></svg>`;
  return `data:image/svg+xml,${encodeURIComponent(svg)}`;
}

export class Alarm extends EventTarget {
  constructor() {
    super();
    this.muted = localStorage.getItem('mimamori.muted') === '1';
    this.audio = null;
    this.loop = null;
    this.step = 0;
    this.flash = null;
    this.baseTitle = document.title;
    this.waiting = [];
  }

  /** Starts listening for sound on a staff session: the browser decides whether it may play. */
  attach() {
    if (this.audio || typeof AudioContext === 'undefined') return;
    try {
      this.audio = new AudioContext();
      this.audio.addEventListener('statechange', () => this.changed());
      // Allowed when the page was clicked (the sign-in); after a reload it is not, and the
      // banner asks for the click.
      this.audio.resume().then(() => this.changed(), () => {});
    } catch {
      this.audio = null;
    }
    this.changed();
  }

  detach() {
    this.stopLoop();
    this.setFlash(false);
    this.audio?.close().catch(() => {});
    this.audio = null;
  }

  /** True when a sound now would not be heard although nobody muted it. */
  get blocked() {
    return !this.muted && this.audio?.state !== 'running';
  }

  /** The click on the banner: a user gesture, so the browser lets sound play now. */
  async unblock() {
    if (!this.audio) this.attach();
    try {
      await this.audio?.resume();
    } catch {
      // Still blocked: the banner stays.
    }
    if ('Notification' in window && Notification.permission === 'default') {
      Notification.requestPermission().catch(() => {});
    }
    this.changed();
    if (!this.blocked && this.loop) this.tone();
  }

  setMuted(m) {
    this.muted = m;
    localStorage.setItem('mimamori.muted', m ? '1' : '0');
    if (m) this.stopLoop();
    this.changed();
  }

  changed() {
    this.dispatchEvent(new Event('change'));
  }

  /** A new alert, or one the hub escalated because nobody answered it. */
  announce(alert, who) {
    if (alert.severity === 'high') this.tone(BASE_HZ, 2);
    if (document.hidden && 'Notification' in window && Notification.permission === 'granted') {
      try {
        new Notification(`${t(`sev_${alert.severity}`)}: ${who}`, { body: t(`kind_${alert.kind}`), tag: `alert-${alert.id}` });
      } catch {
        // Some browsers allow notifications only from a service worker; Web Push covers them.
      }
    }
  }

  /** Follows the live alerts: the loop runs while a critical one is unacknowledged. */
  update(alerts) {
    this.waiting = alerts.filter(unacknowledged);
    const critical = this.waiting.some((a) => a.severity === 'critical');
    if (critical && !this.loop) this.startLoop();
    if (!critical) this.stopLoop();
    this.setFlash(this.waiting.some((a) => a.severity !== 'warning'));
  }

  get ringing() {
    return this.loop !== null;
  }

  startLoop() {
    this.step = 0;
    this.loop = setInterval(() => this.tone(), REPEAT_MS);
    this.tone();
    this.changed();
  }

  stopLoop() {
    if (!this.loop) return;
    clearInterval(this.loop);
    this.loop = null;
    this.step = 0;
    this.changed();
  }

  /** `beeps` short beeps; without a pitch, the loop's next, higher one. */
  tone(hz, beeps = 3) {
    if (this.muted || !this.audio || this.audio.state !== 'running') return;
    const pitch = hz ?? BASE_HZ * RISE ** Math.min(this.step++, RISE_STEPS);
    const start = this.audio.currentTime;
    for (let i = 0; i < beeps; i++) {
      const osc = this.audio.createOscillator();
      const gain = this.audio.createGain();
      osc.type = 'square';
      osc.frequency.value = pitch;
      gain.gain.setValueAtTime(0.25, start + i * 0.3);
      gain.gain.setValueAtTime(0, start + i * 0.3 + 0.2);
      osc.connect(gain).connect(this.audio.destination);
      osc.start(start + i * 0.3);
      osc.stop(start + i * 0.3 + 0.22);
    }
  }

  setFlash(on) {
    if (on && !this.flash) {
      let lit = false;
      this.flash = setInterval(() => {
        lit = !lit;
        document.title = lit ? `🚨 (${this.waiting.length}) ${this.baseTitle}` : this.baseTitle;
        favicon(lit ? ICON_ALERT : ICON_CALM);
      }, 1000);
    } else if (!on && this.flash) {
      clearInterval(this.flash);
      this.flash = null;
      document.title = this.baseTitle;
      favicon(ICON_CALM);
    }
  }
}

function favicon(href) {
  let link = document.querySelector('link[rel="icon"]');
  if (!link) {
    link = document.createElement('link');
    link.rel = 'icon';
    document.head.append(link);
  }
  link.href = href;
}
