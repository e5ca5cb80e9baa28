// live: keeps a page up to date without reloading it. With GET /api/v1/stream
// (Server-Sent Events) a matching event refreshes the page (at most every 2 s); without
// it (404, or the stream broke) the page refreshes every 10 s and the stream is tried
// again later. The stream is read with fetch(), because EventSource cannot send the
// Authorization header. Nothing is refreshed while the tab is hidden.

import { authHeaders } from './api.js';

const POLL_MS = 10000;
const MIN_GAP_MS = 2000;
const RETRY_MS = 60000;
let streamMissing = false; // the server has no /api/v1/stream: do not ask again

// onTick(): refreshes (may return a promise); match(event): whether an SSE event
// ({type, data}) concerns the page; onEvent(event): called with each matching event as it
// comes (to show its values at once, before the refresh); onMode(text): tells how the page
// is kept up to date.
export function live({ onTick, match = () => true, onEvent = () => {}, onMode = () => {}, path = '/api/v1/stream' }) {
  let stopped = false;
  let timer = null;
  let retry = null;
  let ctl = null;
  let last = 0;
  let pending = null;
  let busy = false;

  const tick = async () => {
    if (stopped || document.hidden || busy) return;
    busy = true;
    last = Date.now();
    try {
      await onTick();
    } catch {
      // the page shows its own error state
    } finally {
      busy = false;
    }
  };
  const soon = () => {
    if (pending) return;
    const wait = Math.max(0, last + MIN_GAP_MS - Date.now());
    pending = setTimeout(() => { pending = null; tick(); }, wait);
  };
  const poll = () => {
    if (timer || stopped) return;
    onMode('Refreshing every 10 s');
    timer = setInterval(tick, POLL_MS);
  };
  const unpoll = () => {
    clearInterval(timer);
    timer = null;
  };

  async function stream() {
    if (stopped || streamMissing) {
      poll();
      return;
    }
    ctl = new AbortController();
    let res;
    try {
      res = await fetch(path, { headers: { Accept: 'text/event-stream', ...authHeaders() }, signal: ctl.signal, cache: 'no-store' });
    } catch {
      res = null;
    }
    if (stopped) return;
    const type = res && res.headers.get('content-type');
    if (!res || !res.ok || !res.body || !type || !type.startsWith('text/event-stream')) {
      if (res && res.status === 404) streamMissing = true;
      if (res && res.body) res.body.cancel().catch(() => {});
      poll();
      if (!streamMissing) retry = setTimeout(() => { unpoll(); stream(); }, RETRY_MS);
      return;
    }
    unpoll();
    onMode('Live');
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let ev = { type: 'message', data: '' };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.search(/\r?\n/)) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + (buf[i] === '\r' ? 2 : 1));
          if (line === '') {
            if (ev.data !== '') {
              let data = ev.data.replace(/\n$/, '');
              try { data = JSON.parse(data); } catch { /* not JSON: left as text */ }
              const e = { type: ev.type, data };
              if (match(e)) {
                try { onEvent(e); } catch { /* a page's handler must not end the stream */ }
                soon();
              }
            }
            ev = { type: 'message', data: '' };
          } else if (line.startsWith('data:')) {
            ev.data += line.slice(5).replace(/^ /, '') + '\n';
          } else if (line.startsWith('event:')) {
            ev.type = line.slice(6).trim();
          }
        }
      }
    } catch {
      // aborted or broken: fall back below
    }
    if (stopped) return;
    poll();
    retry = setTimeout(() => { unpoll(); stream(); }, 5000);
  }

  const onVisible = () => { if (!document.hidden) soon(); };
  document.addEventListener('visibilitychange', onVisible);
  stream();
  return {
    stop() {
      stopped = true;
      unpoll();
      clearTimeout(retry);
      clearTimeout(pending);
      if (ctl) ctl.abort();
      document.removeEventListener('visibilitychange', onVisible);
    },
    refresh: soon,
  };
}
