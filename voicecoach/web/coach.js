// voicecoach's page: pick a routine, have the server render it, play it with the
// timeline beside it. Everything shown is read from the session's timeline JSON (the
// one `voicecoach show --json` prints, with its sections) and its WebVTT captions.
"use strict";

const $ = (id) => document.getElementById(id);
const audio = $("audio");
const track = $("captions");

let timeline = null;   // the session's timeline JSON
let session = null;    // the server's status of the session
let sectionShown = -1;
let played = 0;        // seconds of audio heard, seeks left out: what the history records
let lastTime = null;
let recorded = false;
let wakeLock = null;
let weeks = {};         // this week's count against the dosage, by routine

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function post(path, body) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"},
                    body: JSON.stringify(body), keepalive: true});
}

function clock(seconds) {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function option(value, text, selected) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  o.selected = selected;
  return o;
}

// --- choosing ----------------------------------------------------------------------------

async function loadRoutines() {
  let data;
  try {
    data = await api("api/routines");
  } catch (error) {
    $("message").textContent = `Could not load the routines: ${error.message}`;
    $("message").className = "error";
    return;
  }
  $("message").textContent = "Choose a routine, then Start.";
  const list = $("routines");
  list.replaceChildren();
  for (const routine of data.routines) {
    weeks[routine.id] = routine.week.text;
    list.append(card(routine));
  }
}

function card(routine) {
  const box = document.createElement("article");
  box.className = "card";
  box.dataset.routine = routine.id;
  const title = document.createElement("h2");
  title.textContent = routine.title;
  const about = document.createElement("p");
  about.textContent = routine.description;
  const week = document.createElement("p");
  week.className = "muted week";
  week.textContent = routine.week.text;

  const variation = document.createElement("select");
  variation.name = "variation";
  for (const v of routine.variations) variation.append(option(v.name, v.title, v.default));
  const level = document.createElement("select");
  level.name = "level";
  for (const [name, text] of [["low", "Low: shortest holds, fewest reps"],
                              ["middle", "Middle"], ["high", "High: longest holds, most reps"]]) {
    level.append(option(name, text, name === "middle"));
  }
  const length = document.createElement("p");
  length.className = "length";
  const showLength = () => {
    const v = routine.variations.find((x) => x.name === variation.value);
    length.textContent = `Length: ${clock(v.lengths[level.value])}`;
  };
  variation.addEventListener("change", showLength);
  level.addEventListener("change", showLength);
  showLength();

  const start = document.createElement("button");
  start.type = "button";
  start.className = "primary start";
  start.textContent = "Start";
  start.addEventListener("click", () => begin(routine.id, variation.value, level.value));

  const labelled = (text, control) => {
    const l = document.createElement("label");
    l.textContent = text;
    l.append(control);
    return l;
  };
  box.append(title, about, week, labelled("Variation", variation), labelled("Level", level),
             length, start);
  return box;
}

// --- preparing -----------------------------------------------------------------------------

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function begin(routine, variation, level) {
  $("choose").hidden = true;
  $("session").hidden = false;
  $("now").hidden = true;
  $("preparing").hidden = false;
  $("stage").className = "";
  $("week").textContent = weeks[routine] || "";
  $("session-title").textContent = "";
  $("session-variation").textContent = "";
  try {
    session = await post("api/sessions", {routine, variation, level});
    $("session-title").textContent = session.title;
    $("session-variation").textContent = `${session.variation_title}, level ${session.level}`;
    while (session.state !== "ready") {
      if (session.state === "failed") throw new Error(session.error);
      $("stage").textContent = `${session.stage}…`;
      $("progress").value = session.progress;
      await sleep(250);
      session = await api(`api/sessions/${session.id}`);
    }
    timeline = await api(session.timeline);
  } catch (error) {
    $("stage").textContent = `Could not prepare the session: ${error.message}`;
    $("stage").className = "error";
    return;
  }
  $("preparing").hidden = true;
  $("now").hidden = false;
  showSteps();
  played = 0;
  lastTime = null;
  recorded = false;
  sectionShown = -1;
  track.src = session.captions;
  track.track.mode = "hidden";   // cues drive the caption line below, not the player
  audio.src = session.audio;
  audio.play().catch(() => {});   // a browser may want a tap first: the Play button is there
  update();
}

function showSteps() {
  const list = $("steps");
  list.replaceChildren();
  timeline.sections.forEach((section, i) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${section.title} · ${clock(section.start)}`;
    button.addEventListener("click", () => jump(i));
    item.append(button);
    list.append(item);
  });
}

// --- playing -------------------------------------------------------------------------------

function sectionAt(t) {
  let index = 0;
  timeline.sections.forEach((s, i) => { if (s.start <= t) index = i; });
  return index;
}

function spanAt(t, kinds) {
  let found = null;   // the innermost: spans are sorted by start
  for (const s of timeline.spans) if (kinds.includes(s.kind) && s.start <= t && t < s.end) found = s;
  return found;
}

function update() {
  if (!timeline) return;
  const t = audio.currentTime;
  const index = sectionAt(t);
  const section = timeline.sections[index];
  $("step").textContent = section.title;
  const labels = [];
  for (const kind of ["side", "rep"]) {
    const span = spanAt(t, [kind]);
    if (span && span.label && !labels.includes(span.label)) labels.push(span.label);
  }
  $("label").textContent = labels.join(" · ");
  const timed = spanAt(t, ["hold", "rest"]);
  // a countdown shows whole seconds rounded up, so "0 s" only at the end
  const seconds = (end) => {
    const s = Math.ceil(Math.max(0, end - t));
    return s >= 60 ? clock(s) : `${s} s`;
  };
  $("left").textContent = timed ? `${timed.kind === "hold" ? "Hold" : "Rest"}: ${seconds(timed.end)}`
                                : `${seconds(section.end)} left`;
  const cues = track.track.activeCues;
  $("caption").textContent = cues && cues.length ? cues[cues.length - 1].text : "";
  $("now").dataset.time = String(t);
  $("play").textContent = audio.paused ? "Play" : "Pause";
  if (index !== sectionShown) {
    sectionShown = index;
    document.querySelectorAll("#steps li").forEach((li, i) => {
      li.classList.toggle("current", i === index);
    });
    showOnLockScreen(section);
  }
}

function jump(index) {
  const sections = timeline.sections;
  if (index < 0 || index >= sections.length) return;
  audio.currentTime = sections[index].start;
  if (audio.paused) audio.play().catch(() => {});
}

function next() {
  jump(sectionAt(audio.currentTime) + 1);
}

function previous() {
  // as music players do: back to this exercise's start, or past it to the one before
  const index = sectionAt(audio.currentTime);
  jump(audio.currentTime - timeline.sections[index].start > 3 ? index : index - 1);
}

function showOnLockScreen(section) {
  if (!("mediaSession" in navigator) || !("MediaMetadata" in window)) return;
  navigator.mediaSession.metadata = new MediaMetadata({
    title: section.title, artist: `${timeline.title}: ${timeline.variation_title}`,
    album: "voicecoach"});
}

function setUpMediaSession() {
  if (!("mediaSession" in navigator)) return;
  const handlers = {
    play: () => audio.play(), pause: () => audio.pause(),
    nexttrack: next, previoustrack: previous,
    seekto: (details) => { audio.currentTime = details.seekTime; },
  };
  for (const [action, handler] of Object.entries(handlers)) {
    try {
      navigator.mediaSession.setActionHandler(action, handler);
    } catch (error) { /* an action this browser does not know */ }
  }
}

async function keepAwake() {
  if (!("wakeLock" in navigator) || wakeLock || document.visibilityState !== "visible") return;
  try {
    wakeLock = await navigator.wakeLock.request("screen");
    wakeLock.addEventListener("release", () => { wakeLock = null; });
  } catch (error) { /* refused: not a secure context, or battery saving */ }
}

function letSleep() {
  if (wakeLock) wakeLock.release().catch(() => {});
  wakeLock = null;
}

async function record(ended) {
  if (recorded || !timeline || played <= 0) return;
  recorded = true;
  const at = timeline.sections[sectionAt(audio.currentTime)].title;
  const heard = played;
  played = 0;   // played on after this, it is another session
  try {
    const week = await post(`api/sessions/${session.id}/history`,
                            {ended, played_s: heard, stopped_at_step: at,
                             position_s: audio.currentTime});
    $("week").textContent = week.warning ? `Not recorded: ${week.warning}` : week.text;
    weeks[session.routine] = week.text;
  } catch (error) {
    $("week").textContent = `Not recorded: ${error.message}`;
  }
}

function stop() {
  audio.pause();
  record("stopped");
}

function backToRoutines() {
  stop();
  audio.removeAttribute("src");
  audio.load();
  timeline = null;
  $("session").hidden = true;
  $("choose").hidden = false;
  loadRoutines();
}

audio.addEventListener("timeupdate", () => {
  const t = audio.currentTime;
  if (lastTime !== null && !audio.seeking && t > lastTime && t - lastTime < 2) played += t - lastTime;
  lastTime = t;
  update();
});
audio.addEventListener("seeking", () => { lastTime = null; });
audio.addEventListener("seeked", () => { lastTime = audio.currentTime; update(); });
audio.addEventListener("play", () => { recorded = false; keepAwake(); update(); });
audio.addEventListener("pause", () => { letSleep(); update(); });
audio.addEventListener("ended", () => { letSleep(); record("completed"); });
track.addEventListener("cuechange", update);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && !audio.paused) keepAwake();
});
window.addEventListener("pagehide", () => { if (!audio.paused) stop(); });

$("play").addEventListener("click", () => (audio.paused ? audio.play() : audio.pause()));
$("next").addEventListener("click", next);
$("prev").addEventListener("click", previous);
$("stop").addEventListener("click", stop);
$("back").addEventListener("click", backToRoutines);
setUpMediaSession();
loadRoutines();
