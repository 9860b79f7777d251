// A poll that never overlaps itself: `fn` runs now and again `ms` after each run ends, and
// `now()` asks at once (an opened panel wants fresh figures, not ones seconds old).

export class Poller {
  constructor(fn, ms) {
    this.fn = fn;
    this.ms = ms;
    this.timer = null;
    this.busy = false;
  }

  start() {
    this.now();
  }

  now() {
    this.schedule(0);
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), ms);
  }

  async tick() {
    if (this.busy) return; // the run in flight schedules the next one
    this.busy = true;
    try {
      await this.fn();
    } finally {
      this.busy = false;
      this.schedule(this.ms);
    }
  }
}
