// kemdy_tf web page: pick or record a clip, send it to /api/predict, draw the answer.
// Plain DOM, SVG and canvas; no library and nothing fetched from another host.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
// Korean names of the emotions the project knows (kemdy_tf.config.ALL_EMOTIONS).
const EMOTION_KO = {
  neutral: "중립", happy: "기쁨", sad: "슬픔", angry: "분노",
  surprise: "놀람", fear: "두려움", disgust: "혐오",
};

// The browser session's id, sent with every prediction (per-session speaker statistics).
const SESSION_KEY = "kemdy_tf.session";
const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;  // what the server accepts

const state = {
  health: null,     // GET /api/health
  session: null,    // this tab's session id (sessionStorage)
  clip: null,       // {blob, name}: what Predict sends
  recording: null,  // {stream, context, node, chunks, timer, started}
  live: null,       // {stream, context, source, node, socket, windows, hop, stopping}
};
const LIVE_SHOWN_SECONDS = 60;  // the live timeline shows the last minute

const $ = (id) => document.getElementById(id);

// === Start-up ===

document.addEventListener("DOMContentLoaded", () => {
  $("audio-file").addEventListener("change", onFileChosen);
  $("record").addEventListener("click", () => (state.recording ? stopRecording() : startRecording()));
  $("live").addEventListener("click", () => (state.live ? stopLive() : startLive()));
  $("live-stop").addEventListener("click", stopLive);
  $("text").addEventListener("input", updateTextCount);
  $("predict").addEventListener("click", predict);
  $("transcribe").addEventListener("click", transcribe);
  $("reset-statistics").addEventListener("click", resetStatistics);
  state.session = sessionId();
  loadHealth();
});

/** This tab's session id: made once (random, 32 hex digits) and kept in sessionStorage. */
function sessionId() {
  let id = null;
  try {
    id = sessionStorage.getItem(SESSION_KEY);
  } catch { /* storage off: a new id per page load */ }
  if (!id || !SESSION_ID.test(id)) {
    // crypto.getRandomValues, not randomUUID: the latter needs a secure context (not plain HTTP).
    id = [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
    try {
      sessionStorage.setItem(SESSION_KEY, id);
    } catch { /* storage off */ }
  }
  return id;
}

async function loadHealth() {
  try {
    const response = await fetch("/api/health");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.health = await response.json();
  } catch (error) {
    $("model-info").textContent = `서버에 연결할 수 없습니다 (server unreachable: ${error.message})`;
    return;
  }
  const { model, classes, limits, window_seconds: windowSeconds } = state.health;
  $("model-info").textContent =
    `모델 ${model} · 감정 ${classes.map(emotionName).join(", ")} · ` +
    `최대 ${megabytes(limits.max_bytes)} MB, ${limits.max_seconds} 초 ` +
    `(모델은 처음 ${windowSeconds.toFixed(1)} 초를 듣습니다)`;
  $("text").maxLength = limits.max_text_chars;
  $("text-max").textContent = limits.max_text_chars;
  if (!state.health.stt) {
    $("transcribe").title = state.health.stt_detail || "speech recognition is not available";
    $("transcribe-status").textContent = "음성 인식 없음 (speech recognition not installed on the server)";
  }
  updateTranscribeButton();
  $("reset-statistics").disabled = !state.health.speaker_statistics;
  if (!state.health.speaker_statistics) {
    $("session-status").textContent = "이 모델은 화자 통계를 쓰지 않습니다 (this model reads no speaker statistics)";
  }
}

function updateTranscribeButton() {
  $("transcribe").disabled = !(state.clip && state.health && state.health.stt);
}

function megabytes(bytes) {
  const mb = bytes / 2 ** 20;
  return mb >= 10 ? mb.toFixed(0) : mb.toFixed(1);
}

function emotionName(name) {
  return EMOTION_KO[name] ? `${EMOTION_KO[name]} (${name})` : name;
}

function updateTextCount() {
  $("text-count").textContent = [...$("text").value].length;  // code points, as the server counts
}

function setStatus(message, kind = "") {
  const status = $("status");
  status.textContent = message;
  status.className = `status ${kind}`;
}

function setClip(blob, name) {
  state.clip = { blob, name };
  $("clip-name").textContent = `${name} · ${(blob.size / 1024).toFixed(0)} KB`;
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
  $("predict").disabled = false;
  updateTranscribeButton();
}

function onFileChosen(event) {
  const file = event.target.files[0];
  if (!file) return;
  const limits = state.health && state.health.limits;
  if (limits && file.size > limits.max_bytes) {
    setStatus(`${file.name}: 파일이 너무 큽니다 (${(file.size / 2 ** 20).toFixed(1)} MB > ` +
              `${megabytes(limits.max_bytes)} MB)`, "error");
    return;
  }
  setClip(file, file.name);
  setStatus("");
}

// === Recording: Web Audio -> 16-bit PCM WAV in the browser (the server needs no ffmpeg) ===

/** The microphone through the AudioWorklet `processor` of `module` (at `sampleRate` where the
 *  browser can resample to it): {stream, context, source, node}, or null after saying why not. */
async function openMicrophone(module, processor, sampleRate) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.AudioWorkletNode) {
    setStatus("이 페이지에서는 마이크를 쓸 수 없습니다: http://127.0.0.1 / localhost 또는 HTTPS로 여세요 " +
              "(the microphone needs a secure context).", "error");
    return null;
  }
  let stream, context;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    try {
      context = new AudioContext(sampleRate ? { sampleRate } : {});
    } catch {
      context = new AudioContext();  // that rate is refused: the worklet converts
    }
    await context.audioWorklet.addModule(module);
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, processor);
    source.connect(node);
    node.connect(context.destination);  // the node writes silence; connected so the graph pulls it
    return { stream, context, source, node };
  } catch (error) {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    if (context) context.close();
    setStatus(`마이크를 열 수 없습니다 (cannot open the microphone: ${error.name}: ${error.message})`, "error");
    return null;
  }
}

/** Record and Live share the microphone: one at a time (also while it opens). */
function setMicrophoneButtons(enabled) {
  $("record").disabled = !enabled;
  $("live").disabled = !enabled;
}

async function startRecording() {
  setMicrophoneButtons(false);
  const microphone = await openMicrophone("/static/recorder-worklet.js", "pcm-recorder");
  if (!microphone) {
    setMicrophoneButtons(true);
    return;
  }
  const { stream, context, source, node } = microphone;
  const chunks = [];
  let flushed;
  const done = new Promise((resolve) => (flushed = resolve));
  node.port.onmessage = (event) => (event.data === "flushed" ? flushed() : chunks.push(event.data));
  $("record").disabled = false;  // now the stop button; Live stays off until the recording stops

  const maxSeconds = state.health ? state.health.limits.max_seconds : 60;
  const started = performance.now();
  const timer = setInterval(() => {
    const seconds = (performance.now() - started) / 1000;
    $("record-status").textContent = `녹음 중 ${seconds.toFixed(1)} s / ${maxSeconds} s`;
    if (seconds >= maxSeconds - 0.5) stopRecording();  // stay under the server's duration cap
  }, 100);
  state.recording = { stream, context, source, node, chunks, done, timer };
  $("record").setAttribute("aria-pressed", "true");
  $("record").innerHTML = '■ 정지 <span class="en">Stop</span>';
  setStatus("");
}

async function stopRecording() {
  const rec = state.recording;
  if (!rec) return;
  state.recording = null;
  clearInterval(rec.timer);
  rec.node.port.postMessage("flush");
  await rec.done;
  rec.source.disconnect();
  rec.stream.getTracks().forEach((track) => track.stop());
  const sampleRate = rec.context.sampleRate;
  await rec.context.close();
  $("record").setAttribute("aria-pressed", "false");
  $("record").innerHTML = '● 녹음 <span class="en">Record</span>';
  setMicrophoneButtons(true);

  const samples = concat(rec.chunks);
  if (samples.length === 0) {
    $("record-status").textContent = "녹음된 소리가 없습니다 (nothing recorded)";
    return;
  }
  $("record-status").textContent = `녹음 ${(samples.length / sampleRate).toFixed(1)} s`;
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  setClip(encodeWav(samples, sampleRate), `recording-${stamp}.wav`);
}

function concat(chunks) {
  const out = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Mono float samples in [-1, 1] -> a 16-bit PCM WAV blob (RIFF, little-endian). */
function encodeWav(samples, sampleRate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const ascii = (offset, text) => [...text].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true);          // fmt chunk size
  view.setUint16(20, 1, true);           // PCM
  view.setUint16(22, 1, true);           // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true);  // bytes per second
  view.setUint16(32, 2, true);           // bytes per frame
  view.setUint16(34, 16, true);          // bits per sample
  ascii(36, "data");
  view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

// === Live: the microphone streamed to /api/stream, one window's emotion every hop ===

async function startLive() {
  setMicrophoneButtons(false);
  // At 16 kHz the browser resamples the microphone; where it cannot, the worklet does.
  const microphone = await openMicrophone("/static/stream-worklet.js", "pcm16-streamer", 16000);
  if (!microphone) {
    setMicrophoneButtons(true);
    return;
  }
  const { stream, context, source, node } = microphone;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/stream?session=${encodeURIComponent(state.session)}`);
  socket.binaryType = "arraybuffer";
  const live = { stream, context, source, node, socket, windows: [], hop: 1, stopping: false };
  state.live = live;
  socket.onmessage = (event) => onLiveMessage(live, JSON.parse(event.data));
  socket.onclose = (event) => onLiveClosed(live, event);
  node.port.onmessage = (event) => {
    if (socket.readyState === WebSocket.OPEN && !live.stopping) socket.send(event.data);
  };

  $("live-panel").hidden = false;
  $("live-final").textContent = "";
  $("live-partial").textContent = "";
  $("live-count").textContent = "";
  $("live-timeline").replaceChildren();
  const link = $("live-csv");
  if (link.href) URL.revokeObjectURL(link.href);
  link.hidden = true;
  $("live-status").textContent = "연결 중… (connecting)";
  $("live-stop").disabled = false;
  const button = $("live");
  button.setAttribute("aria-pressed", "true");
  button.innerHTML = '■ 정지 <span class="en">Stop live</span>';
  button.disabled = false;  // now the stop button; Record stays off until the session ends
  setStatus("");
}

function onLiveMessage(live, message) {
  if (message.type === "ready") {
    live.hop = message.hop_seconds;
    $("live-status").textContent =
      `듣는 중: ${message.hop_seconds} 초마다 최근 ${message.window_seconds} 초의 감정 ` +
      `(listening: every ${message.hop_seconds} s, the last ${message.window_seconds} s) · ` +
      (message.stt ? "음성 인식 켜짐 (speech recognition on)" : "음성 인식 없음 (no speech recognition)");
  } else if (message.type === "window") {
    live.windows.push(message);
    const shown = LIVE_SHOWN_SECONDS / live.hop + 1;  // the rest is kept by the server, for the CSV
    if (live.windows.length > shown) live.windows.splice(0, live.windows.length - shown);
    drawLive(live);
    if (message.final) $("live-final").textContent += `${message.final} `;
    $("live-partial").textContent = message.partial || "";
  } else if (message.type === "end") {
    if (message.final) $("live-final").textContent += `${message.final} `;
    $("live-partial").textContent = "";
    offerCsv(message);
  }
}

/** The last minute: each window drawn over its last hop (windows overlap; their hops tile). */
function drawLive(live) {
  const last = live.windows[live.windows.length - 1];
  $("live-count").textContent = `${last.index + 1} 구간 (windows) · ${last.end.toFixed(0)} s`;
  const from = Math.max(0, last.end - LIVE_SHOWN_SECONDS);
  const segments = live.windows.map((w) => ({ ...w, start: Math.max(w.start, w.end - live.hop) }))
    .filter((w) => w.start >= from);
  drawTimeline($("live-timeline"), segments, LIVE_SHOWN_SECONDS, from);
}

function offerCsv(end) {
  const link = $("live-csv");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([end.csv], { type: "text/csv;charset=utf-8" }));
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  link.download = `live-${stamp}.csv`;
  link.hidden = false;
  $("live-status").textContent =
    `끝: ${end.windows} 구간, ${end.seconds.toFixed(1)} 초 (session ended: ${end.windows} windows, ${end.seconds.toFixed(1)} s)`;
}

/** Stop sending; the server answers with the session's CSV and closes. */
function stopLive() {
  const live = state.live;
  if (!live || live.stopping) return;
  live.stopping = true;
  releaseMicrophone(live);
  if (live.socket.readyState === WebSocket.OPEN) live.socket.send(JSON.stringify({ type: "stop" }));
  $("live-stop").disabled = true;
}

function releaseMicrophone(live) {
  if (live.released) return;
  live.released = true;
  live.source.disconnect();
  live.stream.getTracks().forEach((track) => track.stop());
  live.context.close();
}

function onLiveClosed(live, event) {
  releaseMicrophone(live);
  if (state.live === live) state.live = null;
  const button = $("live");
  button.setAttribute("aria-pressed", "false");
  button.innerHTML = '◉ 실시간 <span class="en">Live</span>';
  $("live-stop").disabled = true;
  setMicrophoneButtons(true);
  if (event.code !== 1000) {  // a limit, a refusal or a lost connection: the server's reason
    $("live-status").textContent = `연결이 끊겼습니다 (closed, ${event.code}): ${event.reason || "no reason given"}`;
  }
}

// === Predict ===

/** POST the current clip (and `fields`) to `url`; the JSON answer, or an Error with the server's reason. */
async function postClip(url, fields = {}) {
  const form = new FormData();
  form.append("audio", state.clip.blob, state.clip.name);
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  const response = await fetch(url, { method: "POST", body: form });
  let body;
  try {
    body = await response.json();
  } catch {
    throw new Error(`HTTP ${response.status} (no JSON body)`);
  }
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

async function predict() {
  if (!state.clip) return;
  const text = $("text").value.trim();
  $("predict").disabled = true;
  setStatus("예측 중… (predicting)", "busy");
  try {
    const fields = { session: state.session };  // this tab's clips give the speaker statistics
    if (text) fields.text = text;
    render(await postClip("/api/predict", fields));
    setStatus("");
    if (state.health && state.health.speaker_statistics) $("session-status").textContent = "";
  } catch (error) {
    setStatus(`오류 (error): ${error.message}`, "error");
  } finally {
    $("predict").disabled = false;
  }
}

/** Forget this session's clips on the server: the next prediction's statistics start again. */
async function resetStatistics() {
  const button = $("reset-statistics");
  button.disabled = true;
  const form = new FormData();
  form.append("session", state.session);
  try {
    const response = await fetch("/api/session/reset", { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
    $("session-status").textContent =
      `화자 통계를 초기화했습니다: 이 세션의 음성 ${body.dropped}개를 지웠습니다 ` +
      `(speaker statistics reset: ${body.dropped} clip${body.dropped === 1 ? "" : "s"} of this session dropped)`;
  } catch (error) {
    $("session-status").textContent = `초기화 오류 (reset failed): ${error.message}`;
  } finally {
    button.disabled = !(state.health && state.health.speaker_statistics);
  }
}

/** The speaker statistics a prediction used (its `statistics`), in Korean and English. */
function statisticsText(statistics) {
  if (statistics === "training set") return "학습 데이터 평균 (training set, not enrolled)";
  const session = /^this session \((\d+) clips?\)$/.exec(statistics);
  if (session) return `이 세션의 음성 ${session[1]}개 (this session, ${session[1]} clips)`;
  return statistics;
}

// === Transcribe: speech recognition fills the text box (the user may correct it) ===

async function transcribe() {
  if (!state.clip) return;
  $("transcribe").disabled = true;
  $("transcribe-status").textContent = "전사 중… (transcribing)";
  try {
    const body = await postClip("/api/transcribe");
    $("text").value = [...body.transcript].slice(0, $("text").maxLength).join("");
    updateTextCount();
    $("transcribe-status").textContent = body.transcript
      ? `전사 완료: ${body.words.length} 단어 (transcribed; check and correct it)`
      : "들린 단어가 없습니다 (no words heard)";
  } catch (error) {
    $("transcribe-status").textContent = `전사 오류 (error): ${error.message}`;
  } finally {
    updateTranscribeButton();
  }
}

function render(result) {
  $("results").hidden = false;
  const emotion = $("emotion");
  emotion.textContent = emotionName(result.emotion);
  emotion.dataset.emotion = result.emotion;
  $("emotion-prob").textContent = `확률 ${(100 * result.probabilities[result.emotion]).toFixed(1)}%`;
  $("arousal").textContent = `${result.arousal.toFixed(2)} / 5`;
  $("valence").textContent = result.valence === null ? "없음 (전사 없음)" : `${result.valence.toFixed(2)} / 5`;
  $("duration").textContent = `${result.duration_seconds.toFixed(1)} s`;
  $("transcript-used").textContent = result.transcript_missing
    ? "전사 없음: 음성만으로 예측했습니다 (audio only)."
    : `사용한 전사 (transcript used): ${result.transcript}`;
  // Which speaker statistics standardised the voice (an export that reads them; docs/serving.md):
  // this session's clips so far, or the training set's below 2 of them.
  $("statistics-used").textContent = result.statistics
    ? `화자 통계 (speaker statistics): ${statisticsText(result.statistics)}` : "";
  const warnings = $("warnings");
  warnings.replaceChildren(...result.warnings.map((w) => element("li", {}, w)));
  drawProbabilities($("prob-chart"), result.probabilities, result.emotion);
  drawArousalValence($("av-plane"), result.arousal, result.valence);
  drawSpectrogram($("spectrogram"), result.spectrogram);
  renderTimeline(result.segments, result.duration_seconds);
  const { png, ...spectrogramAxes } = result.spectrogram;  // the image is drawn, not listed
  $("json").textContent = JSON.stringify({ ...result, spectrogram: spectrogramAxes }, null, 2);
}

// === Timeline of a long upload ===

function renderTimeline(segments, duration) {
  const panel = $("timeline-panel");
  panel.hidden = !segments;
  if (!segments) return;
  $("timeline-count").textContent = `${segments.length} 구간 (segments)`;
  drawTimeline($("timeline"), segments, duration);
  const number = (v) => (v === null || v === undefined ? "–" : v.toFixed(2));
  $("segments").tBodies[0].replaceChildren(...segments.map((s) => {
    const row = element("tr");
    row.append(
      element("td", { className: "num" }, `${s.start.toFixed(2)} s`),
      element("td", { className: "num" }, `${s.end.toFixed(2)} s`),
      element("td", {}, emotionName(s.emotion)),
      element("td", { className: "num" }, number(s.arousal)),
      element("td", { className: "num" }, number(s.valence)),
      element("td", {}, s.transcript || "—"),
    );
    return row;
  }));
}

/** Emotion bands over time (top) and arousal / valence curves (1..5) below, x in seconds
 *  from `from` (the live timeline scrolls) to `from + duration`. */
function drawTimeline(chart, segments, duration, from = 0) {
  const width = 900, left = 48, right = 12, bandTop = 6, bandHeight = 26, top = 44, bottom = 196;
  const sx = (t) => left + ((t - from) / Math.max(duration, 1e-6)) * (width - left - right);
  const sy = (v) => bottom - ((Math.max(1, Math.min(5, v)) - 1) / 4) * (bottom - top);
  chart.setAttribute("viewBox", `0 0 ${width} ${bottom + 26}`);
  chart.replaceChildren();
  for (let v = 1; v <= 5; v++) {
    chart.append(svg("line", { class: "grid", x1: left, y1: sy(v), x2: width - right, y2: sy(v) }),
                 svg("text", { class: "muted", x: left - 8, y: sy(v) + 4, "text-anchor": "end" }, v));
  }
  const step = duration > 600 ? 60 : duration > 120 ? 30 : duration > 40 ? 10 : duration > 15 ? 5 : 1;
  for (let t = Math.ceil(from / step) * step; t <= from + duration + 1e-9; t += step) {
    chart.append(svg("text", { class: "muted", x: sx(t), y: bottom + 18, "text-anchor": "middle" }, `${t} s`));
  }
  for (const s of segments) {
    const known = EMOTION_KO[s.emotion] ? s.emotion : "other";
    const band = svg("rect", { class: `band band-${known}`, x: sx(s.start), y: bandTop,
                               width: Math.max(1, sx(s.end) - sx(s.start)), height: bandHeight,
                               "data-emotion": s.emotion, "data-start": s.start, "data-end": s.end });
    band.append(svg("title", {}, `${s.start.toFixed(1)}–${s.end.toFixed(1)} s: ${emotionName(s.emotion)}`));
    chart.append(band);
  }
  for (const name of ["arousal", "valence"]) {
    const points = segments.filter((s) => s[name] !== null && s[name] !== undefined)
      .map((s) => `${sx((s.start + s.end) / 2).toFixed(1)},${sy(s[name]).toFixed(1)}`);
    if (points.length) chart.append(svg("polyline", { class: `curve ${name}`, points: points.join(" ") }));
  }
  chart.append(svg("text", { class: "muted", x: width - right, y: top - 4, "text-anchor": "end" },
                   "— 각성 arousal   — 정서가 valence (1–5)"));
}

// === Drawing ===

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function element(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  Object.assign(node, attrs);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Horizontal bars, one per class in the model's order; the predicted one highlighted. */
function drawProbabilities(chart, probabilities, predicted) {
  const classes = Object.keys(probabilities);
  const row = 34, left = 130, right = 62, width = 460;
  chart.setAttribute("viewBox", `0 0 ${width} ${classes.length * row + 6}`);
  chart.replaceChildren();
  classes.forEach((name, i) => {
    const p = probabilities[name];
    const y = i * row + 6;
    const span = width - left - right;
    const top = name === predicted ? " top" : "";
    chart.append(
      svg("text", { x: left - 10, y: y + 17, "text-anchor": "end" }, emotionName(name)),
      svg("rect", { class: "track", x: left, y, width: span, height: 22, rx: 4 }),
      svg("rect", { class: `bar${top}`, x: left, y, width: Math.max(1, p * span), height: 22, rx: 4,
                    "data-class": name, "data-probability": p }),
      svg("text", { x: width - right + 8, y: y + 17 }, `${(100 * p).toFixed(1)}%`),
    );
  });
}

/** Valence (x) and arousal (y) on 1..5 axes; without valence, arousal as a dashed line. */
function drawArousalValence(plane, arousal, valence) {
  const x0 = 52, x1 = 300, y0 = 262, y1 = 14;  // plot area: (x0, y0) is (1, 1)
  const sx = (v) => x0 + ((v - 1) / 4) * (x1 - x0);
  const sy = (a) => y0 - ((a - 1) / 4) * (y0 - y1);
  const clamp = (v) => Math.max(1, Math.min(5, v));
  plane.replaceChildren(svg("rect", { class: "neutral-zone", x: sx(2.5), y: sy(3.5), width: sx(3.5) - sx(2.5),
                                      height: sy(2.5) - sy(3.5) }));
  for (let v = 1; v <= 5; v++) {
    plane.append(
      svg("line", { class: "grid", x1: sx(v), y1: y1, x2: sx(v), y2: y0 }),
      svg("line", { class: "grid", x1: x0, y1: sy(v), x2: x1, y2: sy(v) }),
      svg("text", { class: "muted", x: sx(v), y: y0 + 15, "text-anchor": "middle" }, v),
      svg("text", { class: "muted", x: x0 - 8, y: sy(v) + 4, "text-anchor": "end" }, v),
    );
  }
  plane.append(
    svg("line", { class: "axis", x1: x0, y1: y0, x2: x1, y2: y0 }),
    svg("line", { class: "axis", x1: x0, y1: y0, x2: x0, y2: y1 }),
    svg("text", { class: "muted", x: (x0 + x1) / 2, y: 296, "text-anchor": "middle" }, "정서가 valence: 부정 → 긍정"),
    svg("text", { class: "muted", x: 12, y: (y0 + y1) / 2, "text-anchor": "middle",
                  transform: `rotate(-90 12 ${(y0 + y1) / 2})` }, "각성 arousal: 차분 → 흥분"),
  );
  if (valence === null || valence === undefined) {
    plane.append(
      svg("line", { id: "av-point", class: "line", x1: x0, y1: sy(clamp(arousal)), x2: x1, y2: sy(clamp(arousal)) }),
      svg("text", { class: "muted", x: x1, y: sy(clamp(arousal)) - 8, "text-anchor": "end" }, "정서가 없음 (no transcript)"),
    );
  } else {
    plane.append(svg("circle", { id: "av-point", class: "point", cx: sx(clamp(valence)), cy: sy(clamp(arousal)), r: 8,
                                 "data-valence": valence, "data-arousal": arousal }));
  }
}

/** The server's log-mel PNG on a canvas, with time (s) and mel axes. */
function drawSpectrogram(canvas, spectrogram) {
  const image = new Image();
  image.onload = () => {
    const ctx = canvas.getContext("2d");
    const left = 58, bottom = 30, top = 8, right = 10;
    const w = canvas.width - left - right, h = canvas.height - top - bottom;
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, left, top, w, h);
    ctx.fillStyle = "#5c6577";
    ctx.strokeStyle = "#5c6577";
    ctx.font = "12px sans-serif";
    ctx.textAlign = "center";
    const seconds = spectrogram.seconds;
    const step = seconds > 20 ? 5 : seconds > 8 ? 2 : seconds > 3 ? 1 : 0.5;
    for (let t = 0; t <= seconds + 1e-9; t += step) {
      const x = left + (t / seconds) * w;
      ctx.beginPath();
      ctx.moveTo(x, top + h);
      ctx.lineTo(x, top + h + 5);
      ctx.stroke();
      ctx.fillText(`${t % 1 ? t.toFixed(1) : t} s`, x, top + h + 18);
    }
    ctx.textAlign = "right";
    for (const bin of [0, spectrogram.n_mels / 2, spectrogram.n_mels]) {
      const y = top + h - (bin / spectrogram.n_mels) * h;
      ctx.fillText(bin === spectrogram.n_mels ? `${spectrogram.max_hz / 1000} kHz` : `mel ${bin}`, left - 6, y + 4);
    }
    canvas.dataset.drawn = "true";
    canvas.title = `${spectrogram.frames} frames × ${spectrogram.n_mels} mel bins, ` +
                   `${spectrogram.db_min.toFixed(0)}…${spectrogram.db_max.toFixed(0)} dB`;
  };
  canvas.dataset.drawn = "false";
  image.src = spectrogram.png;
}
