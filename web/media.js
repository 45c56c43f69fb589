// Camera and microphone, and a reconnect backoff shared by the host and the player.

export async function cameraAndMicrophone() {
  return navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
  });
}

export function stopStream(stream) {
  if (stream) for (const track of stream.getTracks()) track.stop();
}

// Delays for reconnection attempts: 0.5 s, 1 s, 2 s, 4 s, then 8 s (with a little jitter).
export function backoffDelay(attempt) {
  const base = Math.min(8000, 500 * 2 ** attempt);
  return base + Math.floor(Math.random() * 250);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
