#!/usr/bin/env python3
"""Attributes `perf script -F ip,sym` samples (stdin) of a Parley process to the stages of the
message path and prints a markdown table row per stage: its share of the samples and, given
Parley's CPU µs per message as the first argument, its µs per message. A sample goes to the
first stage in STAGES one of whose functions is on its stack (leaf to root), so a stage's share
includes what it calls (system calls and the kernel's work for them) unless an earlier stage
claims it. Used by scripts/cpu-stages.sh."""
import collections
import re
import sys

STAGES = [
    ("runtime: sysmon (the Go runtime's monitor thread)", ["runtime.sysmon"]),
    ("runtime: garbage collection", ["runtime.gcBgMarkWorker", "runtime.bgsweep", "runtime.bgscavenge",
                                     "runtime.gcAssist", "runtime.gcDrain", "runtime.markroot"]),
    ("Pebble: WAL write + fdatasync (its LogWriter goroutine)", ["record.(*LogWriter).flushLoop"]),
    ("Pebble: memtable flushes, compactions", ["pebble/v2.(*DB).flush", "pebble/v2.(*DB).runCompaction",
                                               "pebble/v2.(*DB).compact"]),
    ("host: Pebble commit (memtable insert, hand-off to the WAL)", ["storage.(*Batch).Commit"]),
    ("host: building the batch (entries marshalled into it)", ["storage.(*RaftLog).Append", "storage.(*Batch).setEntry",
                                                              "storage.(*RaftLog).SetHardState", "(*Engine).NewBatch",
                                                              "storage.(*Batch).Close"]),
    ("host: apply (queue log, proposal callbacks)", ["cluster.(*Host).applyEntries"]),
    ("host: raft (proposals, Ready, Advance)", ["cluster.(*Host).takeProposals", "raft/v3.(*RawNode)",
                                                "raft/v3.(*raft)"]),
    ("host: snapshots, log compaction", ["cluster.(*Host).snapshot"]),
    ("host: loop, other", ["cluster.(*Host).run"]),
    ("AMQP reader: socket read (ReadFrame)", ["wire.(*Reader).ReadFrame"]),
    ("AMQP reader: publish (routing, queue inbox)", ["amqp091.(*channel).publish", "amqp091.(*channel).doPublish"]),
    ("AMQP reader: basic.ack (settle)", ["amqp091.(*channel).ack", "broker.SettleByQueue"]),
    ("AMQP reader: frames, methods, other", ["amqp091.(*conn).loop"]),
    ("AMQP writer: socket write", ["net.(*conn).Write"]),
    ("AMQP writer: other", ["framewriter.(*Writer).Run"]),
    ("queue: delivery (drain, basic.deliver to the writer)", ["broker.(*Queue).drain"]),
    ("queue: propose (encode the enqueue entry)", ["broker.(*Queue).proposeBatch", "broker.(*Queue).proposeOne"]),
    ("queue: commands, other", ["broker.(*Queue).run"]),
    ("runtime: scheduler (park, find work, netpoll, wake-ups)", ["runtime.schedule", "runtime.findRunnable",
                                                                "runtime.park_m", "runtime.mcall", "runtime.mstart"]),
]


def main():
    per_msg = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    counts = collections.Counter()
    total = 0
    frames = []

    def sample():
        nonlocal total
        if not frames:
            return
        total += 1
        for name, funcs in STAGES:
            if any(f in fr for fr in frames for f in funcs):
                counts[name] += 1
                return
        counts["other"] += 1

    for line in sys.stdin:
        if not line.strip():
            sample()
            frames.clear()
            continue
        if line[0] not in " \t":
            continue
        parts = line.split(None, 1)
        if len(parts) == 2:
            frames.append(re.sub(r" \(.*\)$", "", parts[1].strip()))
    sample()
    if total == 0:
        sys.exit("no samples")
    rows = sorted(((k, v) for k, v in counts.items() if k != "other"), key=lambda kv: -kv[1])
    rows.append(("other", counts["other"]))
    for name, n in rows:
        us = f"{per_msg * n / total:.2f}" if per_msg else "-"
        print(f"| {name} | {100 * n / total:.1f} % | {us} |")


if __name__ == "__main__":
    main()
