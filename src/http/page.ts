/**
 * The status page at `/`: one self-contained HTML document (no external files, nothing fetched
 * from the internet; the box may have no uplink). It polls /status, /healthz, /outputs and
 * /logs and reloads each preview when a newer one exists, with its timestamp as a cache-busting
 * query. Data reaches the DOM only through textContent, never as HTML. A `?token=` in the page's
 * own address is passed on to every request it makes (LAN access).
 */
export function statusPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>multihead status</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">
  :root { color-scheme: dark; font-family: system-ui, sans-serif; background: #16181c; color: #e6e6e6; }
  body { margin: 0 auto; max-width: 1100px; padding: 16px; }
  h1 { font-size: 1.3rem; margin: 0 0 4px; }
  h2 { font-size: 1rem; margin: 20px 0 8px; color: #aab; }
  .muted { color: #8a8f98; font-size: 0.85rem; }
  #health { padding: 10px 14px; border-radius: 6px; margin: 12px 0; font-weight: 600; background: #333; }
  #health[data-state="ok"] { background: #1d4d2b; }
  #health[data-state="degraded"] { background: #6b5314; }
  #health[data-state="error"], #health[data-state="unreachable"] { background: #7a1f1f; }
  #health ul { margin: 6px 0 0; padding-left: 20px; font-weight: 400; }
  #outputs { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }
  .output { background: #22252b; border-radius: 6px; padding: 10px; border: 2px solid transparent; }
  .output[data-playing="false"] { border-color: #a33; }
  .output img { width: 100%; aspect-ratio: 16 / 9; object-fit: contain; background: #000; display: block; }
  .output .placeholder { width: 100%; aspect-ratio: 16 / 9; background: #000; display: flex; align-items: center;
    justify-content: center; color: #777; }
  .output td { word-break: break-all; }
  .output h3 { margin: 0 0 6px; font-size: 1rem; }
  table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
  td, th { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid #2c3038; vertical-align: top; }
  #errors li { font-family: ui-monospace, monospace; font-size: 0.8rem; margin-bottom: 4px; }
  .failed { color: #f77; }
</style>
</head>
<body>
<h1 id="title">multihead</h1>
<div class="muted" id="subtitle"></div>
<div id="health" data-state="loading">loading…</div>
<h2>Outputs</h2>
<div id="outputs"></div>
<h2>Decoders</h2>
<table><thead><tr><th>Decoder</th><th>Source</th><th>Outputs (shared)</th><th>Path</th><th>State</th></tr></thead>
<tbody id="decoders"></tbody></table>
<h2>Connections and versions</h2>
<table><tbody id="facts"></tbody></table>
<h2>Recent warnings and errors</h2>
<ul id="errors"></ul>
<script nonce="${nonce}">
'use strict';
const token = new URLSearchParams(location.search).get('token');
const withToken = (u) => (token ? u + (u.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : u);
const $ = (id) => document.getElementById(id);
const el = (tag, text, attrs) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
};
async function getJson(path) {
  const r = await fetch(withToken(path), { cache: 'no-store' });
  if (!r.ok && r.status !== 503) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}
const cards = new Map();
function outputCard(name) {
  let card = cards.get(name);
  if (card) return card;
  const root = el('div', null, { class: 'output', 'data-output': name });
  const title = el('h3', name);
  const picture = el('div', 'no preview yet', { class: 'placeholder' });
  const info = el('table');
  root.append(title, picture, info);
  $('outputs').append(root);
  card = { root, picture, info, at: 0 };
  cards.set(name, card);
  return card;
}
function rows(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v, cls]) => {
    const tr = el('tr');
    tr.append(el('th', k), el('td', v, cls ? { class: cls } : {}));
    return tr;
  }));
}
function render(status, health, outputs, logs) {
  $('title').textContent = status.device.name + ' (' + status.device.id + ')';
  $('subtitle').textContent = status.display.mode + ' outputs' + (status.display.reason ? ': ' + status.display.reason : '')
    + ' · up ' + status.uptimeS + ' s · supervisor ' + status.supervisor;
  const h = $('health');
  h.dataset.state = health.state;
  h.replaceChildren(el('span', health.state.toUpperCase() + (health.state === 'ok' ? ': every output plays' : '')));
  if (health.reasons.length) {
    const ul = el('ul');
    for (const r of health.reasons) ul.append(el('li', r));
    h.append(ul);
  }
  const decoders = (status.decode && status.decode.decoders) || [];
  const byId = new Map(decoders.map((d) => [d.id, d]));
  const seen = new Set();
  for (const o of outputs) {
    seen.add(o.name);
    const card = outputCard(o.name);
    card.root.dataset.playing = String(o.playing);
    if (o.problem) card.root.dataset.code = o.problem.code; else delete card.root.dataset.code;
    if (o.preview && o.preview.at !== card.at) {
      card.at = o.preview.at;
      const img = el('img', null, {
        alt: 'preview of ' + o.name,
        src: withToken('/outputs/' + encodeURIComponent(o.name) + '/preview.jpg?at=' + o.preview.at),
      });
      card.picture.replaceWith(img);
      card.picture = img;
    }
    const d = o.decoder === null ? undefined : byId.get(o.decoder);
    const shared = d && d.consumers.length > 1 ? ' (shared with ' + d.consumers.filter((c) => c !== o.name).join(', ') + ')' : '';
    rows(card.info, [
      ['Plays', o.source === null ? 'nothing' : o.source],
      ['State', o.problem ? o.problem.code + ': ' + o.problem.message : o.playing ? 'playing' : d && d.failure ? 'decoder failed: ' + d.failure : 'not playing', o.playing && !o.problem ? '' : 'failed'],
      ['Decoder', o.decoder === null ? '–' : o.decoder + shared],
      ['Mode', o.mode || '–'],
      ['Screen', o.monitor ? (o.monitor.name || o.monitor.manufacturer + ' ' + o.monitor.productCode) + (o.monitor.serial ? ' (serial ' + o.monitor.serial + ')' : '') : '–'],
      ['Power', (o.power || '–') + (o.cec && o.cec.error ? ' (CEC: ' + o.cec.error + ')' : ''), o.power && o.power !== 'on' ? 'failed' : ''],
      ['Layout', o.layout ? o.layout.fit + (o.rotation ? ', turned ' + o.rotation + '°' : '') : '–'],
      ['Frames', o.frames === null ? '–' : o.frames + ' shown, ' + o.dropped + ' dropped'],
    ]);
  }
  for (const [name, card] of cards) if (!seen.has(name)) { card.root.remove(); cards.delete(name); }
  $('decoders').replaceChildren(...decoders.map((d) => {
    const tr = el('tr', null, { 'data-decoder': String(d.id) });
    tr.append(el('td', d.id), el('td', d.source), el('td', d.consumers.join(', ') + (d.consumers.length > 1 ? ' (shared)' : '')),
      el('td', (d.hw ? 'hardware ' : 'software ') + d.codec + ' ' + d.width + 'x' + d.height),
      el('td', d.failure ? 'failed: ' + d.failure : 'running', d.failure ? { class: 'failed' } : {}));
    return tr;
  }));
  rows($('facts'), [
    ['Broker', health.broker],
    ['Sharing', status.decode ? (status.decode.sharedDecode ? 'one decoder per source' : 'off') : '–'],
    ['Config version', status.config.version === null ? 'none from the fleet' : status.config.version],
    ['Versions', 'app ' + status.versions.app + ', addon ' + status.versions.addon + ', Node.js ' + status.versions.node],
  ]);
  $('errors').replaceChildren(...(logs.lines.length ? logs.lines.reverse().map((l) =>
    el('li', l.time + ' ' + l.level + ' ' + (l.component || '') + ': ' + (l.msg || ''))) : [el('li', 'none')]));
}
async function refresh() {
  try {
    const [status, health, outputs, logs] = await Promise.all([
      getJson('/status'), getJson('/healthz'), getJson('/outputs'), getJson('/logs?level=warn&lines=8'),
    ]);
    render(status, health, outputs.outputs, logs);
  } catch (e) {
    const h = $('health');
    h.dataset.state = 'unreachable';
    h.textContent = 'cannot reach the supervisor: ' + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
`;
}
