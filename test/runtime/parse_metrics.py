#!/usr/bin/env python3
"""Runs a program that prints Prometheus text and parses it with prometheus_client's parser."""
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

text = subprocess.run([sys.argv[1]], check=True, capture_output=True, text=True).stdout
families = {f.name: f for f in text_string_to_metric_families(text)}
# The parser strips _total from counter family names.
assert families["agner_sample"].type == "counter", families.keys()
values = sorted(s.value for s in families["agner_sample"].samples)
assert values == [5.0, 7.0], values
assert families["agner_sample_gauge"].samples[0].value == -3.0
assert families["agner_sample_fn"].samples[0].value == 1.5
assert families["agner_sample_computed"].type == "counter"
assert families["agner_sample_computed"].samples[0].value == 9.0
hist = families["agner_sample_seconds"]
assert hist.type == "histogram"
buckets = [s for s in hist.samples if s.name.endswith("_bucket")]
counts = [s.value for s in buckets]
assert counts == sorted(counts), "buckets must be cumulative"
assert buckets[-1].labels["le"] == "+Inf"
count = [s for s in hist.samples if s.name.endswith("_count")][0].value
assert count == counts[-1] == 20.0, (count, counts[-1])
les = [float(b.labels["le"]) for b in buckets]
assert les == sorted(les), "le bounds must increase"
print(f"parsed {len(families)} families, {sum(len(f.samples) for f in families.values())} samples: ok")
