// The station screen: renders the daemon's own `state` and `assessment` JSON (docs/mqtt.md)
// from one Server-Sent Events stream. Text only goes in through textContent, never as HTML.
"use strict";

const CHECK_WORDS = {
  too_dark: ["Too dark", "Check the scope's light."],
  too_bright: ["Too bright", "Less light, or press the scope flat on the skin."],
  glare: ["Glare", "Use immersion fluid or polarised light."],
  not_skin: ["Not skin", "Point the scope at the skin."],
  no_lesion: ["No lesion in view", "Place the scope over the lesion."],
  lesion_off_centre: ["Move the lesion to the centre", "Centre the lesion in the view."],
  moving: ["Hold steady", "The image is moving."],
  out_of_focus: ["Out of focus", "Adjust the focus and hold steady."],
};

const ABSTAIN_WORDS = {
  "poor_quality:too_dark": "the image was too dark",
  "poor_quality:too_bright": "the image was too bright",
  "poor_quality:glare": "glare covered the lesion",
  "not_skin": "the view did not look like skin",
  "no_lesion": "no lesion was in view",
  "poor_quality:lesion_off_centre": "the lesion was off centre",
  "poor_quality:moving": "the scope was moving",
  "poor_quality:out_of_focus": "the image was out of focus",
  "too_few_good_frames": "not enough sharp, steady frames in time",
  "out_of_distribution": "the view does not look like the dermoscopic images the model learnt from",
};

const HISTORY = 5;
let assessments = []; // newest last, unique by assessment_id
let seenState = false;
// Whether the daemon serves the frame an assessment used (only with mqtt.publish_frames).
let previews = false;

const $ = (id) => document.getElementById(id);
const pct = (p) => `${Math.round(p * 100)}%`;
const clock = (iso) => {
  const t = new Date(iso);
  return isNaN(t) ? iso : t.toLocaleTimeString();
};

function headline(s) {
  const [word, hint] = CHECK_WORDS[s.check] || [];
  switch (s.state) {
    case "idle": return word ? [word, hint] : ["No lesion in view", "Place the scope over the lesion."];
    case "searching":
      if (s.check === "lesion_off_centre" || s.check === "no_lesion") return [word, hint];
      return s.mode === "manual" ? ["Ready", "Hold the lesion in view and press capture."] : ["Lesion coming into view", "Hold the scope over the lesion."];
    case "hold_steady": return word ? [word, hint] : ["Hold steady", ""];
    case "assessing": return ["Assessing…", "Hold steady."];
    case "assessed": return s.abstained ? ["Assessed: no answer", "See the reasons below. Lift the scope for the next lesion."] : ["Assessed", "Lift the scope for the next lesion."];
    default: return [s.state, ""];
  }
}

function showNoExaminations() {
  document.body.dataset.state = "continuous";
  $("state-text").textContent = "No examinations";
  $("state-detail").textContent = "This station classifies every frame (examination mode continuous); see MQTT.";
  $("progress").hidden = true;
}

function showState(s) {
  if (s === null) {
    // Continuous mode (after a reload too): there is no station state.
    seenState = false;
    showNoExaminations();
    return;
  }
  seenState = true;
  document.body.dataset.state = s.state;
  const [text, detail] = headline(s);
  $("state-text").textContent = text;
  $("state-detail").textContent = detail || "";
  const progress = $("progress");
  if (s.progress && s.state !== "idle") {
    progress.hidden = false;
    $("progress-fill").style.width = pct(Math.min(1, s.progress.frames / s.progress.needed));
    $("progress-text").textContent = `${s.progress.frames} of ${s.progress.needed} good frames`;
  } else {
    progress.hidden = true;
  }
}

function showAbout(a) {
  previews = a.previews === true;
  if (a.mode === "continuous" && !seenState) showNoExaminations();
  $("station").textContent = `Station ${a.station_id}`;
  $("model").textContent = `Model ${a.model_id}`;
  $("engine").textContent = a.engine;
  $("engine").title = `${a.engine}, sha256 ${a.model_sha256}`;
  $("disclaimer").textContent = a.disclaimer;
}

// The referral flag is the assessment's own (`refer`, at the model's operating point; which
// rules fired in `referral`): nothing is decided here. `null` means no flag either way: the
// station abstained, or no operating point applies to this model.
const RULE_WORDS = {
  melanoma: "melanoma rule",
  bcc_akiec: "basal cell carcinoma / actinic keratosis rule",
};

function showRefer(a) {
  const el = $("refer");
  if (a.refer === true) {
    const rules = (a.referral && a.referral.rules_fired) || [];
    el.className = "refer yes";
    el.textContent = "⚠ REFER to a dermatologist";
    const why = document.createElement("span");
    why.className = "rules";
    why.textContent = rules.map((r) => RULE_WORDS[r] || r).join(", ");
    el.appendChild(why);
  } else if (a.refer === false) {
    el.className = "refer no";
    el.textContent = "○ Not flagged for referral (not flagged does not mean benign)";
  } else if (a.abstain) {
    el.className = "refer none";
    el.textContent = "No answer, so no referral flag either way.";
  } else {
    el.className = "refer none";
    el.textContent = "No referral rule for this model.";
  }
}

function topItem(t) {
  const li = document.createElement("li");
  li.dataset.code = t.code;
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = `${t.name} (${t.code}) — ${pct(t.probability)}`;
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = pct(t.probability);
  bar.appendChild(fill);
  const desc = document.createElement("div");
  desc.className = "desc";
  desc.textContent = t.description;
  li.append(name, bar, desc);
  return li;
}

function summary(a) {
  const where = a.context ? [a.context.lesion_id, a.context.body_site].filter(Boolean).join(", ") : "";
  return where ? `${where}: ${verdict(a)}` : verdict(a);
}

function verdict(a) {
  if (a.abstain) return `No answer: ${a.abstain.reasons.map((r) => ABSTAIN_WORDS[r] || r).join("; ")}`;
  const t = a.top[0];
  return t ? `${t.name} (${t.code}) ${pct(t.probability)}` : "No classes";
}

function showLatest() {
  const a = assessments[assessments.length - 1];
  if (!a) return;
  $("latest").dataset.assessmentId = a.assessment_id;
  $("latest-empty").hidden = true;
  $("latest-body").hidden = false;
  $("latest-time").textContent = `Assessed at ${clock(a.assessed_at)}`;
  $("latest-id").textContent = a.assessment_id;
  showRefer(a);
  const abstain = $("abstain");
  abstain.hidden = !a.abstain;
  $("abstain-reasons").replaceChildren();
  if (a.abstain) {
    $("abstain-message").textContent = a.abstain.message;
    for (const r of a.abstain.reasons) {
      const li = document.createElement("li");
      li.textContent = ABSTAIN_WORDS[r] || r;
      $("abstain-reasons").appendChild(li);
    }
  }
  const preview = $("preview");
  preview.hidden = !(previews && a.frames.length > 0);
  if (!preview.hidden) preview.src = `/frame/${encodeURIComponent(a.assessment_id)}`;
  else preview.removeAttribute("src");
  $("top").replaceChildren(...a.top.map(topItem));
  $("latest-disclaimer").textContent = a.disclaimer;
  const q = a.quality;
  $("quality").textContent =
    `${q.frames} frames used over ${(q.span_ms / 1000).toFixed(1)} s · sharpness ≥ ${pct(q.focus_relative_min)} of the best · ` +
    `motion ≤ ${q.motion_px_max.toFixed(1)} px · exposure ${pct(q.exposure_median)} · glare ≤ ${pct(q.glare_max)}`;
  const list = $("history-list");
  list.replaceChildren(...assessments.slice().reverse().map((x) => {
    const li = document.createElement("li");
    li.dataset.assessmentId = x.assessment_id;
    li.textContent = `${clock(x.assessed_at)}: ${summary(x)}`;
    return li;
  }));
}

function addAssessment(a) {
  if (assessments.some((x) => x.assessment_id === a.assessment_id)) return;
  assessments.push(a);
  assessments = assessments.slice(-HISTORY);
  showLatest();
}

// The examination context in force, as the daemon lets the screen see it: the lesion and the
// body site; the patient only with viewer.show_patient. `null`: none is set.
function showContext(c) {
  document.body.dataset.context = c ? "set" : "none";
  const patient = c && (c.patient_name || c.patient_id)
    ? [c.patient_name ? c.patient_name.split("^").filter(Boolean).join(", ") : null, c.patient_id ? `(${c.patient_id})` : null].filter(Boolean).join(" ")
    : null;
  $("context-patient").textContent = c ? (patient || "Patient selected") : "No patient selected";
  const lesion = c ? [c.lesion_id ? `Lesion ${c.lesion_id}` : null, c.body_site].filter(Boolean).join(" · ") : "";
  $("context-lesion").textContent = lesion ? `· ${lesion}` : "";
}

function connected(yes) {
  document.body.dataset.connection = yes ? "open" : "offline";
  $("offline").hidden = yes;
}

function connect() {
  // EventSource reconnects by itself after a drop (the daemon restarting); the banner says so
  // until the stream is back.
  const events = new EventSource("/events");
  events.onopen = () => {
    connected(true);
    seenState = false;
    if (document.body.dataset.state === "offline" || document.body.dataset.state === "connecting") {
      document.body.dataset.state = "waiting";
      $("state-text").textContent = "Waiting for the first frame…";
      $("state-detail").textContent = "";
    }
  };
  events.onerror = () => {
    connected(false);
    $("state-text").textContent = "Station offline";
    $("state-detail").textContent = "Reconnecting…";
    document.body.dataset.state = "offline";
    $("progress").hidden = true;
  };
  const on = (kind, show) => events.addEventListener(kind, (e) => {
    try {
      show(JSON.parse(e.data));
    } catch (err) {
      console.error(`bad ${kind} event`, err);
    }
  });
  on("about", showAbout);
  on("state", showState);
  on("assessment", addAssessment);
  on("context", showContext);
}

connect();
