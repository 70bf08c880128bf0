"""``hsa-video worker`` whose model hangs inside a step on prompts that start with "hang", as a
native kernel that never returns would: it swallows Celery's soft-time-limit exception, so only
the hard time limit can end it. Every other prompt runs normally."""

import sys
import time

from celery.exceptions import SoftTimeLimitExceeded

from hsa_video.cli import main
from worker.runners import tiny

generate = tiny.TinyRunner.generate


def generate_or_hang(self, spec, budget, images, on_step, replan=None):
    while spec.prompt.startswith("hang"):
        try:
            time.sleep(3600)
        except SoftTimeLimitExceeded:
            pass
    return generate(self, spec, budget, images, on_step, replan)


tiny.TinyRunner.generate = generate_or_hang  # before the pool forks: every pool process has it

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
