"""The production stack as real child processes, for the benchmarks and the tests alike.

    processes.py   redis-server, a moto S3 server and our own commands, each on a free loopback port
    stack.py       one deployment (Redis, S3 behind a fault-injecting proxy, Celery workers, gateways)
                   and the faults the reliability runs inject into it
    fuzz.py        schemathesis against the gateway's OpenAPI schema
    cards.py       model cards for a gateway that runs no worker

It runs from a source checkout (the fuzzer reads docs/api.md's error table), never in a deployment.
"""
