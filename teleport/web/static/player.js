// The recording player: the session's events streamed from the proxy into xterm.js.
//
// The stream (application/x-ndjson, as `tsh play` reads it) is parsed as it arrives, so playing
// starts before a long recording has loaded. One loop is the terminal's only writer: it plays
// events at their `ms` offsets scaled by the speed, and serves seeks (the latest one wins).
// Seeking back resets the terminal and replays the prefix; every replay is written in chunks,
// each awaited through xterm's write callback, so a long recording never freezes the page.
"use strict";

import {
  h, apiStream, sitePath, framedPage, errorBox, showError, formatDuration, timeEl, toLogin,
  onLeave, loadXterm, TERMINAL_OPTIONS,
} from "./core.js";

const SPEEDS = [0.5, 1, 2, 4, 8];
const CHUNK_BYTES = 256 * 1024; // written before yielding to the page during a replay
const MAX_SLEEP_MS = 200; // the timeline moves at least this often while playing
const SMALL_STEP_MS = 5000;
const BIG_STEP_MS = 60000;

function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function parseSize(text) {
  const [cols, rows] = String(text || "").split(":").map(Number);
  return cols > 0 && rows > 0 ? {cols, rows} : null;
}

export async function playerPage(cluster, sid) {
  const error = errorBox("player-error");
  const page = await framedPage(cluster, "recordings", "Session recording", error);
  if (!page) return;
  const c = encodeURIComponent(cluster);

  const metaValue = (id) => h("dd", {id}, h("span", {class: "muted"}, "…"));
  const meta = {
    user: metaValue("player-user"), login: metaValue("player-login"),
    node: metaValue("player-node"), start: metaValue("player-start"),
    duration: metaValue("player-duration"),
  };
  const playButton = h("button", {type: "button", id: "player-play", class: "btn btn-primary",
    "aria-label": "Play", disabled: true}, h("span", {"aria-hidden": "true"}, "▶"));
  const timeline = h("input", {type: "range", id: "player-timeline", min: "0", max: "0",
    step: "100", value: "0", "aria-valuetext": "0:00 of 0:00", disabled: true});
  const clock = h("span", {id: "player-time", class: "player-time mono", "aria-hidden": "true"},
    "0:00 / 0:00");
  const speed = h("select", {id: "player-speed"}, SPEEDS.map((s) =>
    h("option", {value: String(s), selected: s === 1}, `${s}×`)));
  const state = h("p", {id: "player-state", class: "player-state", role: "status",
    "aria-live": "polite"}, "loading…");
  const screen = h("div", {id: "player-terminal", class: "player-terminal", role: "region",
    "aria-label": "Recorded terminal", tabindex: "0"});
  const player = h("section", {id: "player", class: "player", "data-state": "loading",
    "aria-label": "Player"},
  h("div", {class: "player-screen"}, screen),
  h("div", {class: "player-controls"},
    playButton,
    h("label", {for: "player-timeline", class: "visually-hidden"}, "Position"),
    timeline,
    clock,
    h("label", {for: "player-speed", class: "inline-label"}, "Speed"),
    speed),
  state);
  page.main.append(
    h("div", {class: "page-head"},
      h("h1", {}, "Session recording"),
      h("a", {href: `/web/cluster/${c}/recordings`, "data-route": true}, "All recordings")),
    error,
    h("dl", {id: "player-meta", class: "meta"},
      h("div", {}, h("dt", {}, "User"), meta.user),
      h("div", {}, h("dt", {}, "Login"), meta.login),
      h("div", {}, h("dt", {}, "Node"), meta.node),
      h("div", {}, h("dt", {}, "Started"), meta.start),
      h("div", {}, h("dt", {}, "Duration"), meta.duration)),
    player);

  let xterm;
  try {
    xterm = await loadXterm();
  } catch (err) {
    showError(error, `cannot load the terminal: ${err.message}`);
    return;
  }
  const term = new xterm.Terminal({...TERMINAL_OPTIONS, cols: 80, rows: 24, scrollback: 1000,
    disableStdin: true, cursorBlink: false});
  // The canvas renderer, loaded before open(), as in the console (the CSP refuses the DOM one).
  term.loadAddon(new xterm.CanvasAddon());
  term.open(screen);
  screen.xterm = term; // read-only hook for browser tests, as the console's

  // --- the recording, as it loads
  const events = []; // {ms, data: Uint8Array} or {ms, size: {cols, rows}}
  let initialSize = {cols: 80, rows: 24};
  let total = 0; // ms of the last event seen (the session's end once loaded)
  let loaded = false;
  let damaged = "";

  // --- the playback state, changed by the controls and served by run()
  let pos = 0; // ms of the recording the terminal shows
  let next = 0; // index of the next event to write
  let playing = false;
  let rate = 1;
  let anchor = {wall: 0, pos: 0}; // while playing: pos = anchor.pos + (now - anchor.wall) * rate
  let pendingSeek = null;
  let stopped = false;
  let wakeUp = null;

  const wake = () => {
    const resolve = wakeUp;
    wakeUp = null;
    if (resolve) resolve();
  };
  const sleep = (ms) => new Promise((resolve) => {
    wakeUp = resolve;
    if (Number.isFinite(ms)) setTimeout(wake, Math.max(0, ms));
  });
  const reanchor = () => {
    anchor = {wall: performance.now(), pos};
  };

  const draw = () => {
    const label = `${formatDuration(pos)} of ${formatDuration(total)}`;
    timeline.max = String(total);
    if (document.activeElement !== timeline || pendingSeek === null) timeline.value = String(pos);
    timeline.setAttribute("aria-valuetext", label);
    clock.textContent = `${formatDuration(pos)} / ${formatDuration(total)}`;
    playButton.setAttribute("aria-label", playing ? "Pause" : "Play");
    playButton.firstChild.textContent = playing ? "❚❚" : "▶";
    player.dataset.position = String(Math.round(pos));
    const ended = loaded && !playing && pos >= total;
    const mode = !events.length && !loaded ? "loading" : playing ? "playing"
      : ended ? "ended" : "paused";
    if (player.dataset.state !== mode) {
      player.dataset.state = mode;
      state.textContent = {loading: "loading…", playing: "playing", paused: "paused",
        ended: damaged ? `ended: the recording is damaged (${damaged}); replayed up to the damage`
          : "ended"}[mode];
    }
  };

  const setPlaying = (on) => {
    if (on && loaded && pos >= total) {
      pendingSeek = 0; // play again from the start
    }
    playing = on;
    reanchor();
    draw();
    wake();
  };

  const seek = (ms) => {
    pendingSeek = Math.max(0, Math.min(ms, total));
    wake();
  };

  /** Writes the events due by `target`; false when a seek or leaving the page cut it short. */
  const writeUntil = async (target) => {
    let bytes = 0;
    let last = null;
    const settle = async () => {
      if (last) await last;
      last = null;
      bytes = 0;
    };
    while (next < events.length && events[next].ms <= target) {
      const event = events[next++];
      if (event.size) {
        await settle();
        term.resize(event.size.cols, event.size.rows);
        continue;
      }
      last = new Promise((resolve) => term.write(event.data, resolve));
      bytes += event.data.length;
      if (bytes >= CHUNK_BYTES) {
        await settle();
        if (stopped || pendingSeek !== null) return false;
      }
    }
    await settle();
    return true;
  };

  const run = async () => {
    while (!stopped) {
      if (pendingSeek !== null) {
        const to = pendingSeek;
        pendingSeek = null;
        // Back before what the terminal shows: start over from a fresh terminal.
        if (next > 0 && events[next - 1].ms > to) {
          term.reset();
          term.resize(initialSize.cols, initialSize.rows);
          next = 0;
        }
        // A newer seek while replaying a long prefix stops it at a chunk and is served next.
        const done = await writeUntil(to);
        pos = done ? to : events[next - 1]?.ms ?? 0;
        reanchor();
        draw();
        continue;
      }
      if (!playing) {
        await sleep(Infinity);
        continue;
      }
      const target = Math.min(anchor.pos + (performance.now() - anchor.wall) * rate, total);
      const done = await writeUntil(target);
      if (!done) continue;
      pos = target;
      if (loaded && pos >= total && next >= events.length) playing = false;
      draw();
      if (!playing) continue;
      const due = next < events.length ? (events[next].ms - pos) / rate : MAX_SLEEP_MS;
      await sleep(Math.min(Math.max(due, 0), MAX_SLEEP_MS));
    }
  };

  // --- controls
  playButton.addEventListener("click", () => setPlaying(!playing));
  speed.addEventListener("change", () => {
    rate = Number(speed.value) || 1;
    reanchor();
    wake();
  });
  timeline.addEventListener("input", () => seek(Number(timeline.value)));
  timeline.addEventListener("keydown", (event) => {
    const steps = {ArrowLeft: -SMALL_STEP_MS, ArrowDown: -SMALL_STEP_MS,
      ArrowRight: SMALL_STEP_MS, ArrowUp: SMALL_STEP_MS,
      PageDown: -BIG_STEP_MS, PageUp: BIG_STEP_MS};
    let to = null;
    if (event.key in steps) to = pos + steps[event.key];
    else if (event.key === "Home") to = 0;
    else if (event.key === "End") to = total;
    if (to === null) return;
    event.preventDefault();
    seek(to);
    timeline.value = String(Math.max(0, Math.min(to, total)));
  });
  // The space bar plays and pauses anywhere in the player but on its buttons and menus.
  player.addEventListener("keydown", (event) => {
    if (event.key !== " " || event.target.closest("button, select, a")) return;
    event.preventDefault();
    setPlaying(!playing);
  });
  onLeave(() => {
    stopped = true;
    wake();
    reader?.cancel().catch(() => {});
    term.dispose();
  });

  // --- load the stream
  const setMeta = (start) => {
    meta.user.replaceChildren(start.user || "");
    meta.login.replaceChildren(start.login || "");
    meta.node.replaceChildren(start.server_hostname || start.server_id || "");
    meta.start.replaceChildren(timeEl(start.time));
  };
  const take = (event) => {
    const ms = Number(event.ms) || 0;
    if (event.event === "session.start") {
      setMeta(event);
      initialSize = parseSize(event.size) || initialSize;
      if (!events.length) term.resize(initialSize.cols, initialSize.rows);
    } else if (event.event === "print" && typeof event.data === "string") {
      events.push({ms, data: decodeBase64(event.data)});
    } else if (event.event === "resize") {
      const size = parseSize(event.size);
      if (size) events.push({ms, size});
    } else if (event.event === "recording.damaged") {
      damaged = String(event.error || "damaged");
    }
    total = Math.max(total, ms);
  };

  let reader = null;
  run().catch((err) => {
    if (!stopped) showError(error, `the player stopped: ${err.message}`);
  });
  try {
    const resp = await apiStream(sitePath(cluster, `sessions/${encodeURIComponent(sid)}/stream`));
    reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let started = false;
    for (;;) {
      const {value, done} = await reader.read();
      if (done || stopped) break;
      buffered += decoder.decode(value, {stream: true});
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines) {
        if (line.trim()) take(JSON.parse(line));
      }
      meta.duration.replaceChildren(`${formatDuration(total)}…`);
      if (!started) {
        started = true;
        playButton.disabled = false;
        timeline.disabled = false;
        setPlaying(true);
      }
      draw();
      wake();
    }
    if (buffered.trim()) take(JSON.parse(buffered));
  } catch (err) {
    if (stopped) return;
    if (err.status === 401) return toLogin();
    showError(error, err.message); // refused, missing, or the stream broke off
  }
  loaded = true;
  playButton.disabled = false;
  timeline.disabled = false;
  meta.duration.replaceChildren(formatDuration(total));
  if (damaged) showError(error, `This recording is damaged (${damaged}): it plays up to the damage.`);
  draw();
  wake();
}
