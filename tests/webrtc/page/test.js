// Relay-only WebRTC call between two RTCPeerConnections in one page.
//
// Query string: turn=<TURN URL>&user=<username>&pass=<credential>[&timeout=<ms>]
// The only ICE server is that TURN server and iceTransportPolicy is "relay", so the only
// candidates Chromium may gather are relay candidates. The page checks, and reports in
// window.umbraResult (read by driver.js):
//   - both connections reach "connected";
//   - a data channel message makes a round trip (pc1 -> pc2 -> pc1);
//   - fake-device audio (getUserMedia) flows both ways: inbound-rtp packetsReceived > 0;
//   - getStats(): the selected candidate pair's local and remote candidates are "relay" on
//     both connections, and no candidate of any other type exists in the stats;
//   - no "typ host" / "typ srflx" / "typ prflx" in any local or remote SDP, nor in any
//     trickled candidate, and no relay candidate's raddr reveals a local address.
"use strict";

const params = new URLSearchParams(location.search);
const turnUrl = params.get("turn");
const user = params.get("user");
const pass = params.get("pass");
const deadlineMs = Number(params.get("timeout") || 45000);
const started = performance.now();

const logEl = document.getElementById("log");
function log(...args) {
  const line = `[${((performance.now() - started) / 1000).toFixed(2)}s] ${args.join(" ")}`;
  logEl.textContent += line + "\n";
  console.log(line);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function remaining() {
  return Math.max(0, deadlineMs - (performance.now() - started));
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${Math.round(ms)} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Resolves once pred() is true, re-checking on each of `events` fired by `target`.
function until(target, events, pred, ms, what) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try {
          v = pred();
        } catch (e) {
          reject(e);
          return;
        }
        if (v) {
          for (const e of events) target.removeEventListener(e, check);
          resolve(v);
        }
      };
      for (const e of events) target.addEventListener(e, check);
      check();
    }),
    ms,
    what,
  );
}

// Any candidate type but relay. (prflx never appears in an SDP; checked anyway.)
const FORBIDDEN_TYP = /\btyp (host|srflx|prflx)\b/;

const RADDR = /\braddr \S+/;
const REDACTED_RADDR = /\braddr (0\.0\.0\.0|::) /;

function candidateLines(sdp) {
  if (!sdp) return [];
  return sdp.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:"));
}

function forbiddenCandidateLines(sdp) {
  return candidateLines(sdp).filter((l) => FORBIDDEN_TYP.test(l));
}

async function statsOf(pc) {
  const byId = new Map();
  const report = await pc.getStats();
  report.forEach((s) => byId.set(s.id, s));
  return byId;
}

function selectedPair(stats) {
  for (const s of stats.values()) {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      return stats.get(s.selectedCandidatePairId) || null;
    }
  }
  // Fallback for stacks without transport.selectedCandidatePairId.
  for (const s of stats.values()) {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") return s;
  }
  return null;
}

function describeCandidate(c) {
  if (!c) return null;
  return {
    type: c.candidateType,
    protocol: c.protocol,
    relayProtocol: c.relayProtocol,
    address: c.address,
    port: c.port,
    url: c.url,
  };
}

function inboundAudio(stats) {
  for (const s of stats.values()) {
    if (s.type === "inbound-rtp" && s.kind === "audio") return s;
  }
  return null;
}

async function run() {
  const checks = [];
  const info = { turnUrl, user, userAgent: navigator.userAgent };
  const check = (name, ok, detail) => {
    checks.push({ name, ok: !!ok, detail });
    log(ok ? "PASS" : "FAIL", name, detail === undefined ? "" : JSON.stringify(detail));
  };

  if (!turnUrl || !user || !pass) {
    throw new Error("missing query parameters: need turn, user and pass");
  }

  const config = {
    iceServers: [{ urls: [turnUrl], username: user, credential: pass }],
    iceTransportPolicy: "relay",
    bundlePolicy: "max-bundle",
    rtcpMuxPolicy: "require",
  };
  const pc1 = new RTCPeerConnection(config);
  const pc2 = new RTCPeerConnection(config);
  const pcs = { pc1, pc2 };

  const gathered = { pc1: [], pc2: [] };
  const iceErrors = { pc1: [], pc2: [] };
  for (const [name, pc] of Object.entries(pcs)) {
    const other = pc === pc1 ? pc2 : pc1;
    pc.addEventListener("icecandidate", (ev) => {
      if (!ev.candidate) {
        log(name, "gathering done");
        return;
      }
      gathered[name].push(ev.candidate.candidate);
      log(name, "candidate", ev.candidate.candidate);
      other.addIceCandidate(ev.candidate).catch((e) => log(name, "addIceCandidate failed:", e.message));
    });
    pc.addEventListener("icecandidateerror", (ev) => {
      const e = { url: ev.url, errorCode: ev.errorCode, errorText: ev.errorText };
      iceErrors[name].push(e);
      log(name, "icecandidateerror", JSON.stringify(e));
    });
    pc.addEventListener("connectionstatechange", () => log(name, "connectionState", pc.connectionState));
    pc.addEventListener("iceconnectionstatechange", () =>
      log(name, "iceConnectionState", pc.iceConnectionState),
    );
  }

  // Fake-device audio both ways (Chromium: --use-fake-device-for-media-stream).
  const stream1 = await withTimeout(navigator.mediaDevices.getUserMedia({ audio: true }), 10000, "getUserMedia");
  const stream2 = await withTimeout(navigator.mediaDevices.getUserMedia({ audio: true }), 10000, "getUserMedia");
  for (const t of stream1.getAudioTracks()) pc1.addTrack(t, stream1);
  for (const t of stream2.getAudioTracks()) pc2.addTrack(t, stream2);
  info.audioTrack = stream1.getAudioTracks().map((t) => t.label);

  // Data channel: pc2 echoes whatever it receives.
  pc2.addEventListener("datachannel", (ev) => {
    const ch = ev.channel;
    ch.addEventListener("message", (m) => ch.send("echo:" + m.data));
  });
  const dc = pc1.createDataChannel("umbra-test", { ordered: true });

  const offer = await pc1.createOffer();
  await pc1.setLocalDescription(offer);
  await pc2.setRemoteDescription(pc1.localDescription);
  const answer = await pc2.createAnswer();
  await pc2.setLocalDescription(answer);
  await pc1.setRemoteDescription(pc2.localDescription);

  const connected = (pc, name) =>
    until(
      pc,
      ["connectionstatechange"],
      () => {
        if (pc.connectionState === "failed") throw new Error(`${name} connection failed`);
        return pc.connectionState === "connected";
      },
      remaining(),
      `${name} connected`,
    );
  await Promise.all([connected(pc1, "pc1"), connected(pc2, "pc2")]);
  check("both connections connected", true, { pc1: pc1.connectionState, pc2: pc2.connectionState });

  // Data channel round trip.
  await until(dc, ["open"], () => dc.readyState === "open", remaining(), "data channel open");
  const token = "umbra-" + Math.random().toString(36).slice(2);
  const t0 = performance.now();
  const echoed = await withTimeout(
    new Promise((resolve) => {
      dc.addEventListener("message", (m) => resolve(m.data), { once: true });
      dc.send(token);
    }),
    Math.min(10000, remaining()),
    "data channel echo",
  );
  const rttMs = performance.now() - t0;
  check("data channel round trip", echoed === "echo:" + token, { sent: token, got: echoed, rttMs: +rttMs.toFixed(1) });

  // Audio: wait until both sides have received RTP.
  let audio = { pc1: null, pc2: null };
  const audioDeadline = performance.now() + Math.min(15000, remaining());
  while (performance.now() < audioDeadline) {
    audio = { pc1: inboundAudio(await statsOf(pc1)), pc2: inboundAudio(await statsOf(pc2)) };
    if (audio.pc1?.packetsReceived > 0 && audio.pc2?.packetsReceived > 0) {
      // Let a little more flow so the energy figure means something.
      await sleep(500);
      audio = { pc1: inboundAudio(await statsOf(pc1)), pc2: inboundAudio(await statsOf(pc2)) };
      break;
    }
    await sleep(250);
  }
  for (const name of ["pc1", "pc2"]) {
    const a = audio[name];
    check(`${name} audio inbound-rtp packetsReceived > 0`, a && a.packetsReceived > 0, a && {
      packetsReceived: a.packetsReceived,
      bytesReceived: a.bytesReceived,
      packetsLost: a.packetsLost,
      totalAudioEnergy: a.totalAudioEnergy,
      codec: a.codecId,
    });
  }

  // Wait (bounded) for gathering to finish so the SDPs list every candidate.
  await Promise.all(
    Object.entries(pcs).map(([name, pc]) =>
      until(
        pc,
        ["icegatheringstatechange"],
        () => pc.iceGatheringState === "complete",
        Math.min(10000, remaining()),
        `${name} gathering complete`,
      ).catch((e) => log("warning:", e.message)),
    ),
  );

  // Selected pair and every candidate known to the stats.
  info.selected = {};
  info.statsCandidates = {};
  for (const [name, pc] of Object.entries(pcs)) {
    const stats = await statsOf(pc);
    const pair = selectedPair(stats);
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    info.selected[name] = pair && {
      state: pair.state,
      nominated: pair.nominated,
      local: describeCandidate(local),
      remote: describeCandidate(remote),
      currentRoundTripTime: pair.currentRoundTripTime,
    };
    check(`${name} selected pair local candidate is relay`, local && local.candidateType === "relay", describeCandidate(local));
    check(`${name} selected pair remote candidate is relay`, remote && remote.candidateType === "relay", describeCandidate(remote));
    const all = [...stats.values()]
      .filter((s) => s.type === "local-candidate" || s.type === "remote-candidate")
      .map((s) => ({ kind: s.type, ...describeCandidate(s) }));
    info.statsCandidates[name] = all;
    const nonRelay = all.filter((c) => c.type !== "relay");
    check(`${name} stats hold only relay candidates`, all.length > 0 && nonRelay.length === 0, nonRelay);
  }

  // SDPs: local and remote descriptions of both connections, and the trickled candidates.
  info.sdpCandidates = {};
  for (const [name, pc] of Object.entries(pcs)) {
    for (const which of ["localDescription", "remoteDescription"]) {
      const sdp = pc[which] && pc[which].sdp;
      const lines = candidateLines(sdp);
      info.sdpCandidates[`${name}.${which}`] = lines;
      const bad = forbiddenCandidateLines(sdp);
      check(`${name} ${which} has no host/srflx/prflx candidate`, !!sdp && bad.length === 0, bad);
    }
    // A relay candidate's raddr could carry the client's own address (its mapped address):
    // it must be redacted (Chromium writes 0.0.0.0) in everything that is signalled.
    const leaky = [...candidateLines(pc.localDescription && pc.localDescription.sdp), ...gathered[name]].filter(
      (c) => RADDR.test(c) && !REDACTED_RADDR.test(c),
    );
    check(`${name} candidates reveal no related address`, leaky.length === 0, leaky);
    const badTrickled = gathered[name].filter((c) => FORBIDDEN_TYP.test(c));
    check(`${name} gathered no host/srflx/prflx candidate`, gathered[name].length > 0 && badTrickled.length === 0, {
      gathered: gathered[name].length,
      bad: badTrickled,
    });
  }
  info.iceErrors = iceErrors;

  for (const pc of Object.values(pcs)) pc.close();
  for (const t of [...stream1.getTracks(), ...stream2.getTracks()]) t.stop();
  return { ok: checks.every((c) => c.ok), checks, info };
}

window.umbraResult = null;
run()
  .then((r) => {
    r.elapsedMs = Math.round(performance.now() - started);
    window.umbraResult = r;
    log("RESULT", r.ok ? "ok" : "FAILED");
  })
  .catch((e) => {
    window.umbraResult = {
      ok: false,
      error: String(e && e.message ? e.message : e),
      elapsedMs: Math.round(performance.now() - started),
    };
    log("ERROR", e && e.stack ? e.stack : e);
  });
