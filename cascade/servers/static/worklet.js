// Audio worklets of the Cascade voice page (they run on the audio thread).
//
// "capture": microphone samples -> PCM16 chunks of `chunk` samples (20 ms at the
// context's rate), posted to the page with their peak level.
// "player": PCM16 chunks from the server -> the speaker, in order; a "clear"
// message drops everything queued (the user barged in).

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = options.processorOptions.chunk;
    this.buffer = new Int16Array(this.chunk);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.peak = Math.max(this.peak, Math.abs(s));
      this.buffer[this.filled++] = s < 0 ? s * 32768 : s * 32767;
      if (this.filled === this.chunk) {
        this.port.postMessage({ pcm: this.buffer, peak: this.peak }, [this.buffer.buffer]);
        this.buffer = new Int16Array(this.chunk);
        this.filled = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.offset = 0;
    this.playing = false;
    this.port.onmessage = (event) => {
      if (event.data === "clear") {
        this.queue = [];
        this.offset = 0;
        return;
      }
      const pcm = event.data;
      const samples = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
      this.queue.push(samples);
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let filled = 0;
    while (filled < out.length && this.queue.length) {
      const head = this.queue[0];
      const take = Math.min(out.length - filled, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + take), filled);
      filled += take;
      this.offset += take;
      if (this.offset === head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    out.fill(0, filled);
    const playing = filled > 0;
    if (playing !== this.playing) {
      this.playing = playing;
      this.port.postMessage({ playing });
    }
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
registerProcessor("player", PlayerProcessor);
