// A small Prometheus registry: counters, gauges and histograms with labels, rendered in
// the text exposition format (version 0.0.4). No dependencies; bounded label sets.

export type Labels = Record<string, string>;

/** seriesMax bounds the label combinations of one metric; past it, new series are dropped. */
export const seriesMax = 1000;

interface Metric {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  render(out: string[]): void;
}

/**
 * Keys of label objects seen before: callers on hot paths (HttpMetrics.record) pass the
 * same frozen object for the same labels, so sorting and escaping happen once.
 */
const labelKeys = new WeakMap<Labels, string>();

/** noLabels is the default label set: frozen, so its (empty) key is computed once. */
const noLabels: Labels = Object.freeze({});

function labelKey(labels: Labels): string {
  const known = labelKeys.get(labels);
  if (known !== undefined) return known;
  const key = Object.keys(labels).sort().map((key) => `${key}="${escapeLabel(labels[key]!)}"`)
    .join(",");
  if (Object.isFrozen(labels)) labelKeys.set(labels, key);
  return key;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function series(name: string, key: string, value: number): string {
  return `${name}${key ? `{${key}}` : ""} ${formatValue(value)}`;
}

type Collect = () => Array<[Labels, number]>;

/**
 * Scalar is a counter's or gauge's labelled values: kept here, or read at render time
 * from `collect` (counts the node keeps elsewhere).
 */
abstract class Scalar implements Metric {
  abstract readonly type: "counter" | "gauge";
  protected values = new Map<string, number>();
  readonly #collect: Collect | undefined;

  constructor(readonly name: string, readonly help: string, collect?: Collect) {
    this.#collect = collect;
  }

  protected store(labels: Labels, next: (previous: number) => number): void {
    const key = labelKey(labels);
    if (!this.values.has(key) && this.values.size >= seriesMax) return;
    this.values.set(key, next(this.values.get(key) ?? 0));
  }

  render(out: string[]): void {
    if (this.#collect !== undefined) {
      for (const [labels, value] of this.#collect()) {
        out.push(series(this.name, labelKey(labels), value));
      }
      return;
    }
    for (const [key, value] of this.values) out.push(series(this.name, key, value));
  }
}

export class Counter extends Scalar {
  readonly type = "counter";

  inc(labels: Labels = noLabels, by = 1): void {
    this.store(labels, (previous) => previous + by);
  }

  get(labels: Labels = noLabels): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
}

export class Gauge extends Scalar {
  readonly type = "gauge";

  set(value: number, labels: Labels = noLabels): void {
    this.store(labels, () => value);
  }
}

/** Histogram counts observations into cumulative buckets (upper bounds, in the metric's unit). */
export class Histogram implements Metric {
  readonly type = "histogram";
  #series = new Map<string, { counts: number[]; sum: number; count: number }>();

  constructor(readonly name: string, readonly help: string, readonly buckets: readonly number[]) {}

  observe(value: number, labels: Labels = noLabels): void {
    const key = labelKey(labels);
    let entry = this.#series.get(key);
    if (entry === undefined) {
      if (this.#series.size >= seriesMax) return;
      entry = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, entry);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) entry.counts[i]!++;
    entry.sum += value;
    entry.count++;
  }

  render(out: string[]): void {
    for (const [key, entry] of this.#series) {
      const prefix = key ? `${key},` : "";
      for (let i = 0; i < this.buckets.length; i++) {
        out.push(
          `${this.name}_bucket{${prefix}le="${formatValue(this.buckets[i]!)}"} ${entry.counts[i]}`,
        );
      }
      out.push(`${this.name}_bucket{${prefix}le="+Inf"} ${entry.count}`);
      out.push(series(`${this.name}_sum`, key, entry.sum));
      out.push(series(`${this.name}_count`, key, entry.count));
    }
  }
}

/** latencyBucketsSeconds spans 50 µs to 10 s. */
export const latencyBucketsSeconds = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
] as const;

export class Registry {
  #metrics = new Map<string, Metric>();

  counter(name: string, help: string, collect?: () => Array<[Labels, number]>): Counter {
    return this.#add(new Counter(name, help, collect));
  }

  gauge(name: string, help: string, collect?: () => Array<[Labels, number]>): Gauge {
    return this.#add(new Gauge(name, help, collect));
  }

  histogram(
    name: string,
    help: string,
    buckets: readonly number[] = latencyBucketsSeconds,
  ): Histogram {
    return this.#add(new Histogram(name, help, buckets));
  }

  #add<M extends Metric>(metric: M): M {
    if (this.#metrics.has(metric.name)) {
      throw new RangeError(`Metric "${metric.name}" is already registered`);
    }
    this.#metrics.set(metric.name, metric);
    return metric;
  }

  /** render returns the whole registry in Prometheus text format. */
  render(): string {
    const out: string[] = [];
    for (const metric of this.#metrics.values()) {
      out.push(`# HELP ${metric.name} ${metric.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`);
      out.push(`# TYPE ${metric.name} ${metric.type}`);
      metric.render(out);
    }
    return out.join("\n") + "\n";
  }
}
