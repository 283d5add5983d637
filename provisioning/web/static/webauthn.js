// Security keys (WebAuthn) for the sign-in and the Security page. A form marked
// data-webauthn="create" or "get" asks the server for the ceremony's options (POST to its
// data-options URL with the form's CSRF token), hands them to navigator.credentials, puts the
// authenticator's answer as JSON into the form's hidden "credential" field and submits the
// form as usual, so the server answers with its ordinary redirect.
"use strict";
(function () {
  function toBytes(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
  }

  function toText(buffer) {
    if (!buffer) return null;
    let raw = "";
    for (const byte of new Uint8Array(buffer)) raw += String.fromCharCode(byte);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map((d) => Object.assign({}, d, { id: toBytes(d.id) }));
  }

  async function fetchOptions(url, csrf) {
    const reply = await fetch(url, {
      method: "POST",
      headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
      credentials: "same-origin",
    });
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error || "the server refused: " + reply.status);
    return body;
  }

  async function create(options) {
    const publicKey = Object.assign({}, options, {
      challenge: toBytes(options.challenge),
      user: Object.assign({}, options.user, { id: toBytes(options.user.id) }),
      excludeCredentials: descriptors(options.excludeCredentials),
    });
    const made = await navigator.credentials.create({ publicKey });
    const response = made.response;
    return JSON.stringify({
      id: made.id,
      rawId: toText(made.rawId),
      type: made.type,
      authenticatorAttachment: made.authenticatorAttachment || undefined,
      clientExtensionResults: made.getClientExtensionResults(),
      response: {
        clientDataJSON: toText(response.clientDataJSON),
        attestationObject: toText(response.attestationObject),
        transports: response.getTransports ? response.getTransports() : [],
      },
    });
  }

  async function get(options) {
    const publicKey = Object.assign({}, options, {
      challenge: toBytes(options.challenge),
      allowCredentials: descriptors(options.allowCredentials),
    });
    const found = await navigator.credentials.get({ publicKey });
    const response = found.response;
    return JSON.stringify({
      id: found.id,
      rawId: toText(found.rawId),
      type: found.type,
      authenticatorAttachment: found.authenticatorAttachment || undefined,
      clientExtensionResults: found.getClientExtensionResults(),
      response: {
        clientDataJSON: toText(response.clientDataJSON),
        authenticatorData: toText(response.authenticatorData),
        signature: toText(response.signature),
        userHandle: toText(response.userHandle),
      },
    });
  }

  function showError(form, message) {
    const out = form.querySelector("[data-webauthn-error]");
    if (out) {
      out.className = "flash error";
      out.textContent = message;
      out.hidden = false;
    }
  }

  async function run(form) {
    const csrf = form.querySelector("input[name=csrf_token]").value;
    const options = await fetchOptions(form.dataset.options, csrf);
    const ceremony = form.dataset.webauthn === "create" ? create : get;
    form.querySelector("input[name=credential]").value = await ceremony(options);
    form.submit();
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.dataset || !form.dataset.webauthn) return;
    event.preventDefault();
    if (!window.PublicKeyCredential) {
      showError(form, "This browser has no security-key support (WebAuthn).");
      return;
    }
    run(form).catch((error) => showError(form, "The security key did not answer: " + error.message));
  });

  // The steps on their own, for a page that needs them (and the end-to-end tests).
  window.offhookWebauthn = { fetchOptions, create, get };
})();
