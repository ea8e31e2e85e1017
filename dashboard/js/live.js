// The live stream: one WebSocket to /api/v1/ws that keeps the dashboard's picture of
// open alerts and resident status current. It remembers the last `seq` it applied,
// and after a drop reconnects with `since` (backing off 0.5 s → 15 s) so nothing is
// missed; the hub answers with the missed frames or, when too much was missed, with
// a fresh snapshot.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

export class Live extends EventTarget {
  constructor(tokenFn) {
    super();
    this.tokenFn = tokenFn;
    this.seq = null;
    this.alerts = new Map(); // alert id -> alert (open or acknowledged)
    this.statuses = new Map(); // resident id -> status
    this.state = 'reconnecting';
    this.delay = MIN_DELAY_MS;
    this.ws = null;
    this.stopped = false;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.dispatchEvent(new CustomEvent('connection', { detail: s }));
  }

  connect() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const params = new URLSearchParams({ token: this.tokenFn() || '' });
    if (this.seq !== null) params.set('since', String(this.seq));
    const ws = new WebSocket(`${proto}://${location.host}/api/v1/ws?${params}`);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = MIN_DELAY_MS;
      this.setState('live');
    };
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.apply(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code === 4401) {
        window.dispatchEvent(new Event('mimamori:logged-out'));
        return;
      }
      this.setState('reconnecting');
      if (this.stopped) return;
      const jitter = Math.random() * 0.3 * this.delay;
      this.timer = setTimeout(() => this.connect(), this.delay + jitter);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    };
  }

  apply(frame) {
    if (typeof frame.seq === 'number') this.seq = Math.max(this.seq ?? 0, frame.seq);
    switch (frame.type) {
      case 'snapshot':
        this.alerts.clear();
        for (const a of frame.alerts) this.alerts.set(a.id, a);
        this.statuses.clear();
        for (const s of frame.residents) this.statuses.set(s.resident_id, s);
        break;
      case 'alert': {
        const a = frame.alert;
        const before = this.alerts.get(a.id);
        // A new alert, one the hub escalated to more people (nobody acknowledged it within
        // the escalation delay), or one nobody answered at all calls for attention again.
        const waiting = a.state === 'open' || a.state === 'unanswered';
        const escalated = before && waiting && ((a.escalated && !before.escalated) || (a.tier ?? 0) > (before.tier ?? 0));
        const isNew = (!before && a.state === 'open')
          || escalated
          || (a.state === 'unanswered' && (!before || before.state !== 'unanswered'));
        if (a.state === 'resolved') this.alerts.delete(a.id);
        else this.alerts.set(a.id, a);
        if (isNew) this.dispatchEvent(new CustomEvent('new-alert', { detail: a }));
        break;
      }
      case 'status':
        this.statuses.set(frame.status.resident_id, frame.status);
        break;
      case 'position':
      case 'resident':
      case 'resync':
        break;
      default:
        return;
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
  }
}
