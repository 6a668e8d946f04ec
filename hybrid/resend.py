"""When the agent may send a job again: a budget of re-sends, after gRPC's retry throttling.

A re-send (``offload.resend_after``) saves a job that a worker took and died holding (an MQTT shared
subscription never delivers it to another worker). It cannot tell that case from a data center that is
merely slow: overloaded, or running anytime solvers that fill the job's budget. Re-sending then adds
load where there is too much already (a retry storm: in ``bench/scale.py``, on 2 cores loaded by
other work, a quarter to a half of the jobs were sent twice). So each job still unanswered at its
re-send time costs a token, each job answered before it earns ``TOKEN_RATIO``, and a re-send needs more
than half of ``MAX_TOKENS``: among prompt answers, the few jobs lost by a dying worker are sent again;
when most answers are slow, one job at most per ten prompt answers is, and none when all are slow.

Pure and synchronous: the agent's offload client and the scale bench's simulated sites use it alike.
"""

from __future__ import annotations

MAX_TOKENS = 10.0
TOKEN_RATIO = 0.1  # earned by each job answered before its re-send time


class ResendBudget:
    def __init__(self, max_tokens: float = MAX_TOKENS, token_ratio: float = TOKEN_RATIO) -> None:
        if max_tokens <= 0 or token_ratio <= 0:
            raise ValueError("a re-send budget needs max_tokens > 0 and token_ratio > 0")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens

    def answered_in_time(self) -> None:
        """A job was answered before its first re-send time."""
        self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def may_resend(self) -> bool:
        """A job is unanswered at a re-send time (that costs a token): whether to send it again."""
        self.tokens = max(0.0, self.tokens - 1.0)
        return self.tokens > self.max_tokens / 2
