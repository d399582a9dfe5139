// The call page's transcript: a line's time plays the recording from there (without JavaScript,
// the link opens the recording at that time, #t= media fragment).
document.addEventListener("click", function (ev) {
  var link = ev.target.closest ? ev.target.closest("a.seek") : null;
  var audio = document.getElementById("transcript-audio");
  if (!link || !audio) return;
  ev.preventDefault();
  audio.currentTime = parseFloat(link.dataset.start || "0");
  audio.play();
});
