// Chromium as one side of an Umbra call: relay-only ICE, a 1000 Hz tone out, the other
// side's audio analysed in. The harness carries the SDP (window.umbraOffer / umbraAnswer).
"use strict";

window.umbraOffer = null;
window.umbraAnswer = null;
window.umbraResult = null;

const q = new URLSearchParams(location.search);
const TIMEOUT_MS = Number(q.get("timeout") || 40000);
const LISTEN_MS = Number(q.get("listen") || 4000);
// The notes of umbra_call::audio::Tone::standard.
const NOTES = [440, 660, 880, 1320];
const started = performance.now();
const checks = [];

function log(...args) {
  const line = args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" ");
  console.log(line);
  document.getElementById("log").textContent += line + "\n";
}

function check(name, ok, detail) {
  checks.push({ name, ok: !!ok, detail });
  log(ok ? "ok  " : "FAIL", name, detail === undefined ? "" : detail);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(pred, ms, what) {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const v = pred();
    if (v) return v;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function candidateLines(sdp) {
  return sdp.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:"));
}

async function run() {
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: q.get("turn"), username: q.get("user"), credential: q.get("pass") }],
    iceTransportPolicy: "relay",
  });
  const ac = new AudioContext({ sampleRate: 48000 });
  await ac.resume();
  const osc = ac.createOscillator();
  osc.frequency.value = 1000;
  const gain = ac.createGain();
  gain.gain.value = 0.3;
  const out = ac.createMediaStreamDestination();
  osc.connect(gain).connect(out);
  osc.start();
  pc.addTrack(out.stream.getAudioTracks()[0], out.stream);

  let analyser = null;
  pc.ontrack = (e) => {
    const stream = e.streams[0] || new MediaStream([e.track]);
    // Chromium only feeds a remote stream to Web Audio once a media element plays it.
    const el = document.getElementById("remote");
    el.srcObject = stream;
    el.play().catch(() => {});
    const src = ac.createMediaStreamSource(stream);
    analyser = ac.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    src.connect(analyser);
  };

  await pc.setLocalDescription(await pc.createOffer());
  await until(() => pc.iceGatheringState === "complete", 15000, "ICE gathering");
  const offer = pc.localDescription.sdp;
  const offered = candidateLines(offer);
  check("the offer carries relay candidates only", offered.length > 0 && offered.every((l) => / typ relay/.test(l)), offered);
  window.umbraOffer = offer;

  const answer = await until(() => window.umbraAnswer, 20000, "the Umbra endpoint's answer");
  const answered = candidateLines(answer);
  check("the Umbra answer carries relay candidates only", answered.length > 0 && answered.every((l) => / typ relay/.test(l)), answered);
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  await until(() => pc.connectionState === "connected" || pc.connectionState === "failed", 15000, "connection");
  check("connected to the Umbra endpoint", pc.connectionState === "connected", pc.connectionState);

  // Listen: the dominant frequency of what arrives, every 100 ms.
  const peaks = [];
  const bins = new Float32Array(8192 / 2);
  const end = performance.now() + LISTEN_MS;
  while (performance.now() < end) {
    await sleep(100);
    if (!analyser) continue;
    analyser.getFloatFrequencyData(bins);
    let best = 0;
    for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    if (bins[best] > -70) peaks.push(Math.round((best * ac.sampleRate) / analyser.fftSize));
  }
  const onNote = peaks.filter((f) => NOTES.some((n) => Math.abs(f - n) <= 12)).length;
  check("heard the Umbra endpoint's notes", peaks.length >= 10 && onNote >= peaks.length * 0.6, { peaks: peaks.length, onNote, sample: peaks.slice(0, 12) });

  const stats = [];
  (await pc.getStats()).forEach((s) => stats.push(s));
  const inbound = stats.find((s) => s.type === "inbound-rtp" && s.kind === "audio");
  check("inbound audio packets", inbound && inbound.packetsReceived > 100, inbound && { packetsReceived: inbound.packetsReceived, packetsLost: inbound.packetsLost, jitter: inbound.jitter });
  const outbound = stats.find((s) => s.type === "outbound-rtp" && s.kind === "audio");
  check("outbound audio packets", outbound && outbound.packetsSent > 100, outbound && { packetsSent: outbound.packetsSent });
  const transport = stats.find((s) => s.type === "transport");
  const pair = transport && stats.find((s) => s.id === transport.selectedCandidatePairId);
  const local = pair && stats.find((s) => s.id === pair.localCandidateId);
  const remote = pair && stats.find((s) => s.id === pair.remoteCandidateId);
  check("selected pair is relay on both ends", local && remote && local.candidateType === "relay" && remote.candidateType === "relay", {
    local: local && local.candidateType,
    remote: remote && remote.candidateType,
  });
  check("DTLS is up (media keys from the fingerprints in the SDP)", transport && transport.dtlsState === "connected", transport && transport.dtlsState);
  pc.close();
}

(async () => {
  try {
    await Promise.race([
      run(),
      sleep(TIMEOUT_MS).then(() => {
        throw new Error(`timed out after ${TIMEOUT_MS} ms`);
      }),
    ]);
    window.umbraResult = { ok: checks.length >= 7 && checks.every((c) => c.ok), checks, elapsedMs: Math.round(performance.now() - started) };
  } catch (e) {
    window.umbraResult = { ok: false, error: String(e && e.message ? e.message : e), checks, elapsedMs: Math.round(performance.now() - started) };
  }
})();
