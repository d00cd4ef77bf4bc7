// AudioWorklet processor for the page's live mode: mixes the microphone to mono, brings it to
// 16 kHz (box-filter decimation when the context runs at another rate) and posts 16-bit
// little-endian PCM blocks that the page sends as WebSocket binary frames (/api/stream).
"use strict";

const TARGET_RATE = 16000;  // what /api/stream reads
const BLOCK = 1600;  // samples per message: 0.1 s, so a window's answer waits for little audio

class Pcm16Streamer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE;  // input samples per output sample (1 when the context is at 16 kHz)
    this.sum = 0;
    this.count = 0;
    this.due = this.step;
    this.block = new Int16Array(BLOCK);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels.length === 0) return true;  // no input connected yet
    for (let i = 0; i < channels[0].length; i++) {
      let mono = 0;
      for (const channel of channels) mono += channel[i];
      this.sum += mono / channels.length;
      this.count += 1;
      if (this.count >= this.due) {  // the mean of the input samples this output sample covers
        const s = Math.max(-1, Math.min(1, this.sum / this.count));
        this.block[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        this.due += this.step - this.count;
        this.sum = 0;
        this.count = 0;
        if (this.filled === BLOCK) {
          // Int16Array is little-endian on every platform browsers run on.
          this.port.postMessage(this.block.buffer, [this.block.buffer]);
          this.block = new Int16Array(BLOCK);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm16-streamer", Pcm16Streamer);
