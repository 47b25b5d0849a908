// One click in the email rates: once the page is open in a browser (a mail scanner's GET runs
// no script), post the chosen score. The page the post leads to carries no such form.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.querySelector("form[data-autopost]");
  if (form) {
    form.submit();
  }
});
