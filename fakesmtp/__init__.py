"""fakesmtp: an aiosmtpd server that injects latency and faults, captures mail, and is
controlled over HTTP. The SMTP peer of the maillab performance lab.

Modules, one job each (import what you need; this package imports nothing heavy itself):

    numbers   finite(): how every number from outside is read (NaN and infinities refused)
    latency   PHASES and the latency spec parser (parse_latency -> LatencySpec)
    faults    fault rules (parse_fault, FaultRule) and their triggers (FaultSet)
    replies   named SMTP replies
    config    Config: latency per phase + fault rules + seed; JSON form and PATCH merging
    store     MessageStore / Message: bounded capture, indexed by recipient, long-poll waits
    parse     headers, bodies and links of a captured message (links never fetched)
    stats     counters, latency percentiles, Prometheus text
    engine    the state SMTP sessions and the HTTP API share
    smtp      the aiosmtpd SMTP subclass and handler: where latency and faults happen
    api       the aiohttp control API;  inbox: its HTML page
    server    FakeSMTP: all of it on one loop in a background thread (start here)
    cli       the `smtp` click command (`maillab smtp`, `python -m fakesmtp`)
    bench     the `smtp_bench` click command: a lean SMTP load client
"""
