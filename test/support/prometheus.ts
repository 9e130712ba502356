// A strict parser of the Prometheus text exposition format, version 0.0.4, for tests:
// https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
//
// The npm parsers we looked at accept malformed input (values such as "abc", unknown
// escapes) and merge the series of a labelled histogram into one, so they cannot show that
// /metrics is well-formed. This one follows the format's grammar and rejects, with the line
// number, anything a Prometheus server would refuse or that breaks the format's rules:
//
// - every line ends with "\n", the last one too; no "\r"
// - "# HELP name text" and "# TYPE name type" at most once per family, TYPE before the
//   family's first sample; other "#" lines are comments
// - metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (not "__"
//   reserved), each label at most once per sample; label values escape only \\ \" \n
// - values are Go floats (digits, exponent, NaN, +Inf, -Inf); timestamps are integers
// - the lines of one family are one group; no series appears twice
// - counters are never negative
// - histograms: per series, _bucket lines with an le label in increasing order, cumulative
//   counts that never decrease, a +Inf bucket equal to _count, and exactly one _sum and
//   _count; summaries: quantile labels in [0, 1], one _sum and _count per series.

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

export interface Sample {
  /** The sample's own name: for a histogram, name_bucket, name_sum or name_count. */
  name: string;
  labels: Record<string, string>;
  value: number;
  timestampMs: number | undefined;
  line: number;
}

export interface Family {
  name: string;
  help: string | undefined;
  type: MetricType;
  samples: Sample[];
}

export interface HistogramSeries {
  /** Labels of the series, without le. */
  labels: Record<string, string>;
  /** Upper bounds and cumulative counts, in increasing le order, +Inf last. */
  buckets: { le: number; count: number }[];
  sum: number;
  count: number;
}

/** ExpositionError is a violation of the text format, with the 1-based line it is on. */
export class ExpositionError extends Error {
  override name = "ExpositionError";
  constructor(readonly line: number, message: string, text: string | undefined = undefined) {
    super(`line ${line}: ${message}${text === undefined ? "" : `: ${JSON.stringify(text)}`}`);
  }
}

const metricNamePattern = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const labelNamePattern = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
// strconv.ParseFloat's decimal syntax (hex floats and "_" separators are not produced by
// any client library and are refused here).
const floatPattern = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
const specialValues: Record<string, number> = {
  "NaN": NaN,
  "+Inf": Infinity,
  "-Inf": -Infinity,
  "Inf": Infinity,
};
const types: readonly MetricType[] = ["counter", "gauge", "histogram", "summary", "untyped"];

/** parseFloatStrict reads a sample value or an le/quantile label; undefined when invalid. */
export function parseFloatStrict(text: string): number | undefined {
  if (Object.hasOwn(specialValues, text)) return specialValues[text];
  return floatPattern.test(text) ? Number(text) : undefined;
}

/**
 * parseExposition parses a whole exposition and checks every rule above. It returns the
 * families by name, in the order they appear.
 */
export function parseExposition(text: string): Map<string, Family> {
  if (text.length > 0 && !text.endsWith("\n")) {
    throw new ExpositionError(text.split("\n").length, "the last line must end with \\n");
  }
  const lines = text.split("\n");
  lines.pop();
  const families = new Map<string, Family>();
  const finished = new Set<string>();
  let current: Family | undefined;
  const seriesSeen = new Set<string>();
  const typed = new Set<string>();

  const familyOf = (name: string, lineNumber: number): Family => {
    if (current !== undefined && current.name === name) return current;
    if (current !== undefined) finished.add(current.name);
    if (finished.has(name)) {
      throw new ExpositionError(
        lineNumber,
        `the lines of family ${JSON.stringify(name)} must form one group`,
      );
    }
    current = { name, help: undefined, type: "untyped", samples: [] };
    families.set(name, current);
    return current;
  };

  for (const [index, line] of lines.entries()) {
    const lineNumber = index + 1;
    if (line.includes("\r")) throw new ExpositionError(lineNumber, "carriage return", line);
    if (line.trim() === "") continue;
    if (line.startsWith("#")) {
      const tokens = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line);
      if (tokens === null) continue; // A comment.
      const [, keyword, name = "", rest = ""] = tokens;
      if (!metricNamePattern.test(name)) {
        throw new ExpositionError(lineNumber, "invalid metric name", name);
      }
      const family = familyOf(name, lineNumber);
      if (keyword === "HELP") {
        if (family.help !== undefined) {
          throw new ExpositionError(lineNumber, `second HELP line for ${name}`);
        }
        family.help = unescapeHelp(rest, lineNumber);
      } else {
        if (family.samples.length > 0) {
          throw new ExpositionError(lineNumber, `TYPE line for ${name} after its samples`);
        }
        if (typed.has(name)) {
          throw new ExpositionError(lineNumber, `second TYPE line for ${name}`);
        }
        const type = rest.trim();
        if (!(types as readonly string[]).includes(type)) {
          throw new ExpositionError(lineNumber, "unknown metric type", type);
        }
        family.type = type as MetricType;
        typed.add(name);
      }
      continue;
    }
    const sample = parseSampleLine(line, lineNumber);
    const familyName = familyNameOf(sample.name, current);
    const family = familyOf(familyName, lineNumber);
    checkSampleName(family, sample);
    const seriesKey = `${sample.name}{${
      Object.keys(sample.labels).sort().map((k) => `${k}=${JSON.stringify(sample.labels[k])}`)
        .join(",")
    }}`;
    if (seriesSeen.has(seriesKey)) {
      throw new ExpositionError(lineNumber, "duplicate series", seriesKey);
    }
    seriesSeen.add(seriesKey);
    family.samples.push(sample);
  }
  for (const family of families.values()) checkFamily(family);
  return families;
}

/** A sample named x_bucket/x_sum/x_count belongs to the family x if x is the current one. */
function familyNameOf(sampleName: string, current: Family | undefined): string {
  if (current !== undefined) {
    const suffixes = current.type === "histogram"
      ? ["_bucket", "_sum", "_count"]
      : current.type === "summary"
      ? ["_sum", "_count"]
      : [];
    for (const suffix of suffixes) {
      if (sampleName === current.name + suffix) return current.name;
    }
  }
  return sampleName;
}

function checkSampleName(family: Family, sample: Sample): void {
  const { name, labels, line } = sample;
  if (family.type === "histogram") {
    if (name === family.name) {
      throw new ExpositionError(line, `histogram ${family.name} has a sample without a suffix`);
    }
    if (name === `${family.name}_bucket` && !Object.hasOwn(labels, "le")) {
      throw new ExpositionError(line, `bucket of ${family.name} without an le label`);
    }
    if (name !== `${family.name}_bucket` && Object.hasOwn(labels, "le")) {
      throw new ExpositionError(line, `le label on ${name}`);
    }
  } else if (family.type === "summary") {
    if (name === family.name && !Object.hasOwn(labels, "quantile")) {
      throw new ExpositionError(line, `quantile of ${family.name} without a quantile label`);
    }
  } else if (family.type === "counter" && sample.value < 0) {
    throw new ExpositionError(line, `counter ${name} is negative`);
  }
}

function checkFamily(family: Family): void {
  if (family.type === "histogram") {
    histogramSeries(family); // Checks consistency.
  } else if (family.type === "summary") {
    const groups = new Map<string, { sum: number; count: number }>();
    for (const sample of family.samples) {
      const { quantile, ...rest } = sample.labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      const group = groups.get(key) ?? { sum: 0, count: 0 };
      groups.set(key, group);
      if (quantile !== undefined) {
        const q = parseFloatStrict(quantile);
        if (q === undefined || q < 0 || q > 1) {
          throw new ExpositionError(sample.line, "quantile must be in [0, 1]", quantile);
        }
      } else if (sample.name.endsWith("_sum")) {
        group.sum++;
      } else if (sample.name.endsWith("_count")) {
        group.count++;
      }
    }
    for (const [key, group] of groups) {
      if (group.sum !== 1 || group.count !== 1) {
        throw new ExpositionError(0, `summary ${family.name}${key} needs one _sum and one _count`);
      }
    }
  }
}

/**
 * histogramSeries groups a histogram family into series and checks each: le strictly
 * increasing, counts cumulative, a +Inf bucket equal to _count, one _sum and one _count.
 */
export function histogramSeries(family: Family): HistogramSeries[] {
  if (family.type !== "histogram") throw new TypeError(`${family.name} is not a histogram`);
  const bySeries = new Map<string, HistogramSeries & { sums: number; counts: number }>();
  const lastLine = new Map<string, number>();
  for (const sample of family.samples) {
    const { le, ...labels } = sample.labels;
    const key = JSON.stringify(Object.entries(labels).sort());
    let series = bySeries.get(key);
    if (series === undefined) {
      series = { labels, buckets: [], sum: NaN, count: NaN, sums: 0, counts: 0 };
      bySeries.set(key, series);
    }
    lastLine.set(key, sample.line);
    if (sample.name.endsWith("_bucket")) {
      const bound = parseFloatStrict(le ?? "");
      if (bound === undefined || Number.isNaN(bound)) {
        throw new ExpositionError(sample.line, "le must be a number", le);
      }
      const previous = series.buckets.at(-1);
      if (previous !== undefined) {
        if (bound <= previous.le) {
          throw new ExpositionError(sample.line, `le values of ${family.name} must increase`);
        }
        if (sample.value < previous.count) {
          throw new ExpositionError(
            sample.line,
            `bucket counts of ${family.name} must not decrease`,
          );
        }
      }
      if (!Number.isInteger(sample.value) || sample.value < 0) {
        throw new ExpositionError(sample.line, "a bucket count must be a non-negative integer");
      }
      series.buckets.push({ le: bound, count: sample.value });
    } else if (sample.name.endsWith("_sum")) {
      series.sum = sample.value;
      series.sums++;
    } else {
      series.count = sample.value;
      series.counts++;
    }
  }
  const result: HistogramSeries[] = [];
  for (const [key, series] of bySeries) {
    const line = lastLine.get(key) ?? 0;
    const where = `histogram ${family.name}${key}`;
    if (series.sums !== 1 || series.counts !== 1) {
      throw new ExpositionError(line, `${where} needs exactly one _sum and one _count`);
    }
    const last = series.buckets.at(-1);
    if (last === undefined || last.le !== Infinity) {
      throw new ExpositionError(line, `${where} has no +Inf bucket`);
    }
    if (last.count !== series.count) {
      throw new ExpositionError(
        line,
        `${where}: the +Inf bucket (${last.count}) differs from _count (${series.count})`,
      );
    }
    const { sums: _sums, counts: _counts, ...clean } = series;
    result.push(clean);
  }
  return result;
}

function unescapeHelp(text: string, line: number): string {
  let result = "";
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char !== "\\") {
      result += char;
      continue;
    }
    const next = text[++i];
    if (next === "\\") result += "\\";
    else if (next === "n") result += "\n";
    else throw new ExpositionError(line, "invalid escape in HELP", `\\${next ?? ""}`);
  }
  return result;
}

/** parseSampleLine reads `name{labels} value [timestamp]`. */
function parseSampleLine(line: string, lineNumber: number): Sample {
  let position = 0;
  const fail = (message: string): never => {
    throw new ExpositionError(lineNumber, `${message} at column ${position + 1}`, line);
  };
  const skipBlanks = (): void => {
    while (line[position] === " " || line[position] === "\t") position++;
  };
  skipBlanks();
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line.slice(position));
  if (nameMatch === null) fail("expected a metric name");
  const name = nameMatch![0];
  position += name.length;
  const labels: Record<string, string> = {};
  const afterName = position;
  skipBlanks();
  if (line[position] !== "{") position = afterName;
  if (line[position] === "{") {
    position++;
    skipBlanks();
    while (line[position] !== "}") {
      const labelMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(position));
      if (labelMatch === null) fail("expected a label name");
      const labelName = labelMatch![0];
      if (!labelNamePattern.test(labelName) || labelName.startsWith("__")) {
        fail(`invalid label name ${JSON.stringify(labelName)}`);
      }
      if (Object.hasOwn(labels, labelName)) fail(`label ${labelName} given twice`);
      position += labelName.length;
      skipBlanks();
      if (line[position] !== "=") fail("expected =");
      position++;
      skipBlanks();
      if (line[position] !== '"') fail("expected a quoted label value");
      position++;
      let value = "";
      for (;;) {
        const char = line[position];
        if (char === undefined) fail("unterminated label value");
        if (char === '"') break;
        if (char === "\\") {
          const next = line[position + 1];
          if (next === "\\") value += "\\";
          else if (next === '"') value += '"';
          else if (next === "n") value += "\n";
          else fail(`invalid escape \\${next ?? ""} in a label value`);
          position += 2;
          continue;
        }
        value += char;
        position++;
      }
      position++; // The closing quote.
      labels[labelName] = value;
      skipBlanks();
      if (line[position] === ",") {
        position++;
        skipBlanks();
      } else if (line[position] !== "}") {
        fail("expected , or }");
      }
    }
    position++; // The closing brace.
  }
  const rest = line.slice(position);
  if (!/^[ \t]/.test(rest)) fail("expected a blank before the value");
  const fields = rest.trim().split(/[ \t]+/);
  if (fields.length < 1 || fields.length > 2 || fields[0] === "") {
    fail("expected value [timestamp]");
  }
  const value = parseFloatStrict(fields[0]!);
  if (value === undefined) fail(`invalid value ${JSON.stringify(fields[0])}`);
  let timestampMs: number | undefined;
  if (fields.length === 2) {
    if (!/^-?[0-9]{1,19}$/.test(fields[1]!)) fail(`invalid timestamp ${JSON.stringify(fields[1])}`);
    timestampMs = Number(fields[1]);
  }
  return { name, labels, value: value!, timestampMs, line: lineNumber };
}

/** Helpers for tests: one family that must exist, and one sample by labels. */
export function family(families: Map<string, Family>, name: string): Family {
  const found = families.get(name);
  if (found === undefined) {
    throw new Error(`No metric family ${name}; have ${[...families.keys()].join(", ")}`);
  }
  return found;
}

/** sampleValue is the value of the sample named `name` whose labels include `labels`. */
export function sampleValue(
  families: Map<string, Family>,
  familyName: string,
  labels: Record<string, string> = {},
  name = familyName,
): number | undefined {
  const matches = family(families, familyName).samples.filter((sample) =>
    sample.name === name &&
    Object.entries(labels).every(([key, value]) => sample.labels[key] === value)
  );
  if (matches.length > 1) {
    throw new Error(`${matches.length} samples of ${name} match ${JSON.stringify(labels)}`);
  }
  return matches[0]?.value;
}
