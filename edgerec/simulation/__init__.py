"""The experiment harness: federated learning simulated end to end.

It sits above every other layer and may import all of them (data, teacher, converters,
runtime, coordinator, the federated building blocks); nothing in the product imports
it, so devices never install experiment code they do not run. Importing this package
loads nothing heavy; import the submodules you need.

Modules:
    experiment      ``run_simulation``: the table of shipped / local-only / centralized /
                    federated rows, and its settings (``SimConfig``)
    timesplit       cut the interaction log at a global time into devices
    shipped_bundle  teacher + real converter on the pre-cut-off log
    population      a synthetic device population with a post-cut-off trend shift
    evaluation      runtime scoring and the non-federated rows
    fleet           simulated devices running ``SyncClient`` against the real coordinator
    secagg_round    one SecAgg+ round with every client and the server in memory
    asgi            an in-process ``httpx`` transport to the coordinator app (tests)
    cli             ``edgerec simulate-federated``
"""
