#!/usr/bin/env python3
# Writes test/fixtures/ddp/sampler.json: torch.utils.data.DistributedSampler's indices for a grid of
# (size, world size, rank, seed, epoch, shuffle, drop_last), the reference for dist.DistributedSampler.
# Needs torch (2.13.0 CPU from the local wheels: scripts/setup-python-torch.sh).
import json
import os

import torch
from torch.utils.data import DistributedSampler

cases = []
for n in (0, 1, 5, 10, 17, 64, 1000):
    for world in (1, 2, 3, 4):
        for seed in (0, 3):
            for epoch in (0, 2):
                for shuffle in (True, False):
                    for drop_last in (False, True):
                        if not shuffle and (seed, epoch) != (0, 0):
                            continue
                        for rank in range(world):
                            s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
                            s.set_epoch(epoch)
                            cases.append({"n": n, "world": world, "rank": rank, "seed": seed, "epoch": epoch,
                                          "shuffle": shuffle, "dropLast": drop_last, "indices": list(iter(s))})
out = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "ddp", "sampler.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
print(f"{len(cases)} cases -> {out}")
