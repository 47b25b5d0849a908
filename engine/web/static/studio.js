// The studio's few behaviours, none needed to read a page: live reload (the local studio), the
// customer search box, submitting the preview's choices as they change, and fitting each email
// frame to its content.
"use strict";

function fitFrames(root) {
  root.querySelectorAll("iframe[data-fit]").forEach((frame) => {
    const fit = () => {
      const body = frame.contentDocument && frame.contentDocument.documentElement;
      if (body) frame.height = Math.max(200, body.scrollHeight + 4);
    };
    frame.addEventListener("load", fit);
    if (frame.contentDocument && frame.contentDocument.readyState === "complete") fit();
  });
}

function wire(root) {
  root.querySelectorAll("select[data-submit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  root.querySelectorAll("input[data-search]").forEach((input) => {
    const list = document.getElementById(input.getAttribute("list"));
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const response = await fetch(input.dataset.search + "?q=" + encodeURIComponent(input.value));
        if (!response.ok) return;
        const found = await response.json();
        list.replaceChildren(...found.map((c) => {
          const option = document.createElement("option");
          option.value = c.id;
          option.label = [c.email, c.name].filter(Boolean).join(" · ");
          return option;
        }));
      }, 150);
    });
  });
  fitFrames(root);
  // Audience sizes still being counted: look again in a moment.
  if (root.querySelector("[data-counting]")) setTimeout(refresh, 1500);
}

// After a file changes, the page fetches itself again and swaps its content in place: no reload,
// so the scroll position and what is open stay as they were.
async function refresh() {
  const response = await fetch(location.href, { headers: { "X-Studio-Refresh": "1" } });
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("content");
  const current = document.getElementById("content");
  if (!fresh || !current) return;
  current.replaceWith(fresh);
  wire(fresh);
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

document.addEventListener("DOMContentLoaded", () => {
  wire(document);
  if (document.body.dataset.live) {
    const changes = new EventSource("/studio/events");
    changes.addEventListener("change", () => refresh());
  }
});
