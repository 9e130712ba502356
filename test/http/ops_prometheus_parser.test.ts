// The strict text-format parser of test/support/prometheus.ts, which the /metrics tests
// trust: it must accept valid expositions and refuse every malformed one.

import { describe, expect, test } from "bun:test";
import { Registry } from "../../src/lib/metrics.ts";
import {
  ExpositionError,
  family,
  histogramSeries,
  parseExposition,
  sampleValue,
} from "../support/prometheus.ts";

const valid = `# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# A comment that is not HELP or TYPE.
msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9

metric_without_timestamp_and_labels 12.47
something_weird{problem="division by zero"} +Inf -3982045
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="0.2"} 100392
http_request_duration_seconds_bucket{le="0.5"} 129389
http_request_duration_seconds_bucket{le="1"} 133988
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
`;

describe("parseExposition", () => {
  test("reads the example of the format's documentation", () => {
    const families = parseExposition(valid);
    expect([...families.keys()]).toEqual([
      "http_requests_total",
      "msdos_file_access_time_seconds",
      "metric_without_timestamp_and_labels",
      "something_weird",
      "http_request_duration_seconds",
      "rpc_duration_seconds",
    ]);
    expect(family(families, "http_requests_total").help).toBe(
      "The total number of HTTP requests.",
    );
    expect(sampleValue(families, "http_requests_total", { code: "400" })).toBe(3);
    const msdos = family(families, "msdos_file_access_time_seconds").samples[0]!;
    expect(msdos.labels).toEqual({
      path: "C:\\DIR\\FILE.TXT",
      error: 'Cannot find file:\n"FILE.TXT"',
    });
    expect(sampleValue(families, "something_weird")).toBe(Infinity);
    const [series] = histogramSeries(family(families, "http_request_duration_seconds"));
    expect(series?.count).toBe(144320);
    expect(series?.buckets.map((bucket) => bucket.le)).toEqual([0.05, 0.1, 0.2, 0.5, 1, Infinity]);
  });

  test("reads what our registry writes, escaped label values included", () => {
    const registry = new Registry();
    registry.counter("keel_c_total", "Help with a \\ and a\nnewline").inc({
      peer: 'we"ird\\name\nx',
    });
    registry.gauge("keel_g", "g").set(-2.5);
    const histogram = registry.histogram("keel_h_seconds", "h", [0.1, 1]);
    histogram.observe(0.05, { route: "/a" });
    histogram.observe(5, { route: "/a" });
    histogram.observe(0.5, { route: "/b" });
    const families = parseExposition(registry.render());
    expect(family(families, "keel_c_total").help).toBe("Help with a \\ and a\nnewline");
    expect(family(families, "keel_c_total").samples[0]?.labels.peer).toBe('we"ird\\name\nx');
    expect(sampleValue(families, "keel_g")).toBe(-2.5);
    const series = histogramSeries(family(families, "keel_h_seconds"));
    expect(series.map((s) => [s.labels.route, s.buckets.map((b) => b.count), s.count])).toEqual([
      ["/a", [1, 1, 2], 2],
      ["/b", [0, 1, 1], 1],
    ]);
  });

  const malformed: [string, string, RegExp][] = [
    ["no final newline", "a 1", /must end with/],
    ["a carriage return", "a 1\r\n", /carriage return/],
    ["a value that is not a number", "a one\n", /invalid value/],
    ["a hex value", "a 0x10\n", /invalid value/],
    ["no value", "a\n", /blank before the value|expected value/],
    ["a bad timestamp", "a 1 12.5\n", /invalid timestamp/],
    ["extra fields", "a 1 2 3\n", /expected value/],
    ["a bad metric name", "1a 1\n", /expected a metric name/],
    ["a bad label name", 'a{1x="v"} 1\n', /label name/],
    ["a reserved label name", 'a{__name__="v"} 1\n', /invalid label name/],
    ["an unquoted label value", "a{x=v} 1\n", /quoted label value/],
    ["an unterminated label value", 'a{x="v} 1\n', /unterminated|expected/],
    ["an unknown escape", 'a{x="\\t"} 1\n', /invalid escape/],
    ["a label given twice", 'a{x="1",x="2"} 1\n', /given twice/],
    ["a missing comma", 'a{x="1" y="2"} 1\n', /expected , or }/],
    ["a duplicate series", 'a{x="1"} 1\na{x="1"} 2\n', /duplicate series/],
    ["a split family", 'a 1\nb 1\na{x="1"} 2\n', /one group/],
    ["a second TYPE", "# TYPE a gauge\n# TYPE a gauge\na 1\n", /second TYPE/],
    ["a TYPE after samples", "a 1\n# TYPE a gauge\n", /after its samples/],
    ["an unknown type", "# TYPE a meter\na 1\n", /unknown metric type/],
    ["a second HELP", "# HELP a x\n# HELP a y\na 1\n", /second HELP/],
    ["a bad HELP escape", "# HELP a x\\ty\na 1\n", /invalid escape in HELP/],
    ["a negative counter", "# TYPE a counter\na -1\n", /negative/],
    [
      "a histogram without +Inf",
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
      /no \+Inf bucket/,
    ],
    [
      "a +Inf bucket that differs from the count",
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
      /differs from _count/,
    ],
    [
      "buckets out of order",
      '# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      /must increase/,
    ],
    [
      "decreasing bucket counts",
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="2"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n',
      /must not decrease/,
    ],
    [
      "a bucket without le",
      "# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n",
      /without an le label/,
    ],
    [
      "a histogram without _sum",
      '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n',
      /one _sum and one _count/,
    ],
    ["a histogram sample without a suffix", "# TYPE h histogram\nh 1\n", /without a suffix/],
    [
      "a summary quantile out of range",
      '# TYPE s summary\ns{quantile="2"} 1\ns_sum 1\ns_count 1\n',
      /quantile must be/,
    ],
  ];

  for (const [what, text, message] of malformed) {
    test(`refuses ${what}`, () => {
      let error: unknown;
      try {
        parseExposition(text);
      } catch (caught: unknown) {
        error = caught;
      }
      expect(error).toBeInstanceOf(ExpositionError);
      expect((error as Error).message).toMatch(message);
    });
  }
});
