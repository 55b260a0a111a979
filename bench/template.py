"""A template stream of the retail POS transaction's shape, generated and encoded to JSON on one
core, next to (in the same run) Faker + json.dumps building the same shape and the hand-written
retail pack doing the same.

    .venv/bin/python bench/template.py [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from run import BLOCK, best_rate, faker_case, pack_case

POS_TEMPLATE = """
run: {name: bench, seed: 1}
packs:
  template:
    params:
      streams:
        pos_transaction:
          fields:
            transaction_id: {gen: sequence, start: 1}
            store_id: {gen: pattern, pattern: "S####"}
            register_id: {gen: uniform, min: 0, max: 6, integer: true}
            customer_id: {gen: pattern, pattern: "C########"}
            channel: {gen: choice, values: [store, online, click_and_collect], weights: [7, 2, 1]}
            payment_method: {gen: choice, values: [card, cash, mobile_wallet, gift_card]}
            currency: {gen: const, value: USD}
            items:
              gen: array
              length: {min: 1, max: 5}
              items:
                line: {gen: sequence, start: 1}
                sku: {gen: pattern, pattern: "SKU-#######"}
                quantity: {gen: uniform, min: 1, max: 4, integer: true}
                unit_price: {gen: lognormal, mu: 2.5, sigma: 0.8, min: 0.5, max: 60, decimals: 2}
                discount: {gen: const, value: 0.0}
                line_total: {gen: expr, expr: "quantity * unit_price", decimals: 2}
            subtotal: {gen: expr, expr: "sum(items.line_total)", decimals: 2}
            tax: {gen: expr, expr: "round(subtotal * 0.08, 2)", decimals: 2}
            total: {gen: expr, expr: "subtotal + tax", decimals: 2}
sinks: {out: {type: stdout}}
"""


def template_case() -> Any:
    from datafactory.config import parse_config
    from datafactory.encoders.json import JsonEncoder
    from datafactory.engine.seeding import SeedTree
    from datafactory_template import TemplatePack

    cfg = parse_config(POS_TEMPLATE)
    gen = TemplatePack(cfg.pack_params["template"], SeedTree(1)).stream("pos_transaction")
    enc = JsonEncoder(gen.schema, 1, fast_path=True)
    seq = [0]

    def run() -> int:
        times = 1_767_225_600_000_000 + np.arange(seq[0], seq[0] + BLOCK, dtype=np.int64) * 1000
        enc.encode(gen.generate(seq[0], times))
        seq[0] += BLOCK
        return BLOCK

    return run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--json", default="artifacts/bench-template.json")
    args = ap.parse_args()
    faker = best_rate(faker_case(), args.seconds)
    retail = best_rate(pack_case("json", True), args.seconds)
    template = best_rate(template_case(), args.seconds)
    print(
        f"template stream of the POS transaction's shape, generate + encode JSON (one core): "
        f"{template:,.0f} ev/s = {template / faker:.1f}x Faker + json.dumps (goal >= 30x), "
        f"{template / retail:.2f}x the retail pack (goal >= 0.5x)"
    )
    out = {"template": template, "faker": faker, "retail": retail}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
