// Shows the refusal the server sends back as ?failed=1.
if (new URLSearchParams(location.search).has("failed")) {
  document.getElementById("failed").hidden = false;
}
