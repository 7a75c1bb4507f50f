"""The adaptive concurrency limit of one endpoint: how many requests to keep in flight.

Pure logic: no HTTP, no clock, no sleeping. The dispatcher reports every answer with
:meth:`AdaptiveLimit.record` (when the request was sent, when the answer came, what kind of
answer it was, how many requests were in flight) and reads :attr:`AdaptiveLimit.limit`,
which it puts on the endpoint's :class:`~consumer.limiter.Limiter`.

The algorithm is additive increase, multiplicative decrease (AIMD, as TCP and the AIMD
limiter of Netflix's concurrency-limits) with two additions taken from delay-based
controllers (TCP Vegas, Netflix's Gradient2, Envoy's adaptive concurrency filter):

* **Slow start.** Until the first sign of overload the limit grows by one per successful
  answer, doubling every round trip, so a replica finds a large capacity in a few round
  trips instead of minutes.
* **Overload answers** (429 Too Many Requests, 503 Service Unavailable) and **timeouts**
  multiply the limit by ``backoff`` (0.9). Only a request sent after the last decrease,
  answered while no more are in flight than the limit allows, can cause another: the answers
  to requests admitted under the old limit say nothing about the new one, so a burst of 429s
  to one round of requests cuts the limit once, not fifty times. (A unit's place may be
  granted before a cut and its request sent just after: in flight above the limit tells such
  a request apart. Traced alone against K = 48, each refusal at 49 was followed within 2 ms
  by one of these, a second cut to 39 and a ceiling of 43.) The limit then climbs back, but
  only to one below the level that was refused, and stays there for ``plateau_s`` (or until
  the moment the server's ``Retry-After`` names, capped at ``max_hold_s``, if that is later)
  before it probes beyond: replicas sharing a server sit just under its capacity instead of
  bumping into it every few round trips. Beyond that level it probes as CUBIC does after its
  plateau: slowly at first, faster with time, at most ``(t / plateau_s) ** 3`` above it
  ``t`` seconds after the plateau (1 after a second, 8 after two): replicas sharing a server
  creep past the level where it refused, so the next refusal finds their sum one or two over
  its capacity and cuts one replica once, where a growth of one per round trip (what it had)
  put every replica over within a few round trips and each cut two or three times in a burst
  of refusals. A capacity that grew is still found within seconds. After the server
  answered nothing for longer than a plateau (an outage, an idle endpoint), which tested
  nothing, the limit resumes at most one below the level last refused and holds it for
  a plateau before probing again, as TCP restarts an idle connection from the window it
  validated: replicas coming back from a 30 s outage neither find no bound left nor
  come back at wherever their probes stood.
  Refused while already at ``min_limit``, the endpoint sends nothing new
  for that time (:attr:`AdaptiveLimit.resume_at`): a limit cannot go lower, so the pace
  must.
* **Queueing delay.** The no-load round trip time is the smallest seen within the last
  ``rtt_window_s`` (two half windows, so a model that legitimately becomes slower is
  learnt again within that time). Answers are gathered in rounds of ``limit`` answers
  (one round trip at full use); when even the *fastest* answer of a round took more than
  ``tolerance`` x the no-load time, every request waited (the signal CoDel reads: the
  minimum over an interval ignores a burst and the noise of a busy machine, which lift
  the mean but leave some answers fast). Outside slow start only two such rounds in a
  row make a standing queue in the server: a stall of the replica's process or of a
  busy machine delays every answer of one round, then passes, while a queue persists
  (CoDel too acts on a delay only once it has lasted an interval); between the two the
  limit does not grow. The limit the round was measured at is then scaled by
  ``DELAY_CUT_MARGIN x no-load / fastest`` (the faster of the two rounds; to
  ``MAX_DELAY_CUT`` of it at most): by Little's law ``no-load / fastest`` is the share of
  the server's capacity this replica's requests actually occupy, and the margin (0.9)
  takes every replica seeing the same queue a little below its share, so the queue
  drains to nothing, not only to the tolerance. Without the margin (and with cuts of a
  fifth at most, as before) three replicas cutting at different moments kept their sum
  above the capacity: the server was never seen unloaded, each half window's minimum was
  a queued time, and the no-load time climbed with every window (simulated: to 2-5 x L
  within 40 s when the replicas joined a second apart, the p99 to 3-8 x L; scenario 7's
  queue mode once held a mean of 2.7 L in the server). A replica that never saw the
  server unloaded (it joined while others kept a queue) takes the queued time for the
  no-load time until the queue drains.
* **Refusals rule while there are any.** Within ``refusals_rule_s`` of a 429 or 503 the
  queueing-delay rule stands aside: a server that refuses what it cannot serve states
  its capacity and keeps no queue to measure, so rounds slower than tolerance are then
  the delay of a busy machine (the replica's CPU, the kernel, the server's own event
  loop), and cutting for them only leaves capacity unused. The client-side throttling
  of Google's SRE book likewise lets the server's rejections, not latency, say how much
  to send. A timeout is no such statement and leaves the rule on; a server that never
  refuses (it queues) is left to the delay rule.
* **The replica's own lateness is not the server's.** A busy or CPU-starved replica
  notices answers late: its event loop is still running other callbacks, or its process
  is not scheduled. The dispatcher passes with each answer the lag its event loop had
  all through the request's life (:mod:`consumer.looplag`); the smallest such lag of a
  round, which every answer of the round shared, is taken off the round's fastest
  answer before it is compared with the no-load time, so a starved replica does not
  read its own lag as a queue in the server and cut its limit. (Taking each answer's
  own lag off would pick, as the fastest, answers that waited less than their estimate:
  the queue would be underestimated.) The no-load time itself is learnt from the whole
  round trips: an overestimated lag can only make the rule slower to see a queue,
  never see one that is not there.
* **Additive increase** otherwise: ``probe`` per round (``probe / limit`` per successful
  answer), and only while the limit is in use (at least half of it in flight), so an idle
  replica does not grow a limit it never tested.

The limit moves between ``min_limit`` and ``max_limit`` and starts at ``initial_limit``.
Answers that say nothing about capacity (a 400, a 500 the model gives for a bad input, a
refused connection, which is the circuit breaker's business) are :attr:`Signal.IGNORE`.
"""

from __future__ import annotations

import math

from consumer.adaptive_types import AdaptiveConfig, Cause, Cut, Signal

__all__ = ["AdaptiveConfig", "AdaptiveLimit", "Cause", "Cut", "Signal"]


# A round is judged only with at least this many samples (a limit of 1 or 2 would judge
# queueing from one or two answers, too noisy).
MIN_ROUND_SAMPLES = 4
# The most a single queueing judgement may cut the limit to (a factor).
MAX_DELAY_CUT = 0.5
# A queueing judgement takes the limit this far below the share it measured (a factor).
DELAY_CUT_MARGIN = 0.9


class AdaptiveLimit:
    """The live limit of one endpoint and the state it is derived from."""

    def __init__(self, config: AdaptiveConfig) -> None:
        """Start at ``config.initial_limit``, in slow start, with no round trip seen."""
        self.config = config
        self._value = float(min(max(config.initial_limit, config.min_limit), config.max_limit))
        self.slow_start = True
        self.decreases = 0  # how many times the limit was cut
        self.last_cut: Cut | None = None  # the latest cut, for metrics and logs
        # Refused while at min_limit: no new request should be sent before this time.
        self.resume_at = -math.inf
        self._last_decrease = -math.inf  # when the limit was last cut
        # After an overload answer: no increase beyond _ceiling before _ceiling_until.
        self._ceiling = math.inf
        self._ceiling_until = -math.inf
        self._refused_at = -math.inf  # the last 429 or 503 (timeouts are not counted)
        self._heard_at = -math.inf  # the last answer from the server (ok, 429 or 503)
        # The no-load round trip: minimum of the current and the previous half window.
        self._rtt_min_now = math.inf
        self._rtt_min_before = math.inf
        self._bucket_start: float | None = None
        # The current round of successful answers.
        self._round_count = 0
        self._round_fastest = math.inf
        self._round_lag = math.inf
        self._round_first_sent = math.inf
        self._round_size = max(self.limit, MIN_ROUND_SAMPLES)
        # The fastest answer of the last round, if it was above tolerance (inf: it was not).
        self._queued_round = math.inf

    @property
    def limit(self) -> int:
        """The current limit, an integer in ``[min_limit, max_limit]``."""
        return int(self._value)

    @property
    def no_load_rtt(self) -> float | None:
        """The smallest round trip time remembered (seconds), or ``None`` before any."""
        best = min(self._rtt_min_now, self._rtt_min_before)
        return None if math.isinf(best) else best

    def record(  # noqa: PLR0913 - one answer: its signal, times, load, server and loop hints
        self,
        signal: Signal,
        *,
        sent_at: float,
        now: float,
        in_flight: int,
        retry_after_s: float | None = None,
        loop_lag_s: float = 0.0,
    ) -> int:
        """Take one answer into account; return the new limit.

        ``sent_at`` and ``now`` are readings of one monotonic clock (the request's send
        time and its answer's arrival), ``in_flight`` the requests on the wire when the
        answer came (this one included), ``retry_after_s`` the server's ``Retry-After``
        in seconds, if it sent one, ``loop_lag_s`` how late the replica's event loop
        ran all through the request's life (:meth:`consumer.looplag.LoopLag.since`):
        that much of the round trip is the replica's, not the server's.
        """
        if now < sent_at:
            raise ValueError(f"an answer cannot come before its request ({now} < {sent_at})")
        if not (math.isfinite(loop_lag_s) and loop_lag_s >= 0):
            raise ValueError(f"loop_lag_s must be a finite number >= 0, got {loop_lag_s}")
        if signal in {Signal.OK, Signal.OVERLOAD}:
            self._skip_silence(now)
        if signal is Signal.OK:
            self._on_success(now - sent_at, loop_lag_s, sent_at, now, in_flight)
        elif signal in {Signal.OVERLOAD, Signal.TIMEOUT}:
            cause = Cause.TIMEOUT if signal is Signal.TIMEOUT else Cause.OVERLOAD
            if cause is Cause.OVERLOAD:
                self._refused_at = max(self._refused_at, now)
            self._on_overload(sent_at, now, retry_after_s, cause, in_flight)
        return self.limit

    def _skip_silence(self, now: float) -> None:
        """After a silence longer than a plateau, come back below the last refusal.

        The probe beyond the level last refused grows with the time since its plateau
        ended; time in which nothing was answered (an outage, an idle endpoint) tested
        nothing. So after such a silence the limit resumes at most at the level below the
        last refusal, the one level the server confirmed, and holds it for a plateau
        before probing again from the start, as TCP restarts an idle connection from the
        window it validated (RFC 7661), not from what it was probing. Counting the silence,
        the first replica whose circuit closed after a 30 s outage found no bound left and
        took the whole server within a round trip or two (traced: 47 against 8 and 14).
        Resuming the probe's clock where it stopped (5047b2a) still let each replica come
        back wherever its probe stood: traced, 16 + 24 + 17 against K = 48, 29 refusals
        in the first second, three or four cuts per replica, 0.8 of the steady goodput for
        three seconds.

        The refusals rule's window (``refusals_rule_s`` after a 429) counts answered time
        likewise: the server that refused before an outage is the one that answers after
        it. Counting the outage, a 30 s one ended the rule, and the slow rounds of a busy
        machine with every replica rushing back were read as a queue and cut.
        """
        silence, self._heard_at = now - self._heard_at, now
        if not self.config.plateau_s < silence < math.inf:
            return
        self._refused_at += silence  # the refusals rule's window: answered time only
        if not math.isinf(self._ceiling):
            self._value = min(self._value, max(self._ceiling, float(self.config.min_limit)))
            self._ceiling_until = now + self.config.plateau_s

    def _on_overload(
        self, sent_at: float, now: float, retry_after_s: float | None, cause: Cause, in_flight: int
    ) -> None:
        config = self.config
        hold = config.plateau_s
        if retry_after_s is not None and retry_after_s > 0:
            hold = max(hold, min(retry_after_s, config.max_hold_s))
        if self.limit <= config.min_limit:  # cannot go lower: stop sending for a while
            self.resume_at = max(self.resume_at, now + hold)
        if sent_at >= self._last_decrease and in_flight <= self.limit:
            refused = self.limit
            ceiling = float(max(refused - 1, config.min_limit))
            if now < self._ceiling_until:
                ceiling = min(ceiling, self._ceiling)
            self._ceiling = ceiling
            self._decrease(self._value * config.backoff, now, cause)
        self._ceiling_until = max(self._ceiling_until, now + hold)

    def _on_success(
        self, rtt: float, lag: float, sent_at: float, now: float, in_flight: int
    ) -> None:
        self._remember_rtt(rtt, now)
        self._round_count += 1
        self._round_fastest = min(self._round_fastest, rtt)
        self._round_lag = min(self._round_lag, lag)
        self._round_first_sent = min(self._round_first_sent, sent_at)
        if self._round_count >= self._round_size:
            fastest = max(self._round_fastest - self._round_lag, 0.0)
            valid = self._round_first_sent >= self._last_decrease
            measured = min(self._value, float(self._round_size))  # the level the round saw
            self._new_round()
            if self._judge_round(fastest, measured, now, valid=valid):
                return
        if in_flight * 2 < self.limit or not math.isinf(self._queued_round):
            return  # not in use, or a queue may be forming: no growth
        top = float(self.config.max_limit)
        if now < self._ceiling_until:
            top = min(top, self._ceiling)
        elif not math.isinf(self._ceiling):  # beyond the level refused: slowly, then faster
            top = min(
                top, self._ceiling + ((now - self._ceiling_until) / self.config.plateau_s) ** 3
            )
        step = 1.0 if self.slow_start else self.config.probe / self._value
        self._value = max(self._value, min(self._value + step, top))

    def _judge_round(self, fastest: float, measured: float, now: float, *, valid: bool) -> bool:
        """Cut the limit if this round and the one before both saw a standing queue.

        Return whether it was cut. A round above tolerance is remembered; the next one
        confirms it (a queue in the server persists, a stall of this busy process or of
        the machine passes). In slow start one round is enough: the limit doubled into
        the queue, which grows fast, and a stall that ends slow start early costs little.
        """
        no_load = self.no_load_rtt
        tolerance = self.config.tolerance
        if not valid:  # sent partly under the limit before the last cut: no verdict
            return False
        if now - self._refused_at < self.config.refusals_rule_s:
            self._queued_round = math.inf  # the server states its capacity: refusals rule
            return False
        if no_load is None or fastest <= tolerance * no_load:
            self._queued_round = math.inf
            return False
        seen = min(fastest, self._queued_round)
        if math.isinf(self._queued_round) and not self.slow_start:
            self._queued_round = fastest
            return False
        self._queued_round = math.inf
        share = DELAY_CUT_MARGIN * no_load / seen
        self._decrease(measured * max(MAX_DELAY_CUT, share), now, Cause.QUEUE)
        return True

    def _decrease(self, value: float, now: float, cause: Cause) -> None:
        was = self.limit
        self._value = max(value, float(self.config.min_limit))
        self.last_cut = Cut(cause, now, was, self.limit)
        self._last_decrease = now
        self.decreases += 1
        self.slow_start = False
        self._queued_round = math.inf
        self._new_round()

    def _new_round(self) -> None:
        """Start a round of as many answers as the limit allows requests (one round trip)."""
        self._round_count = 0
        self._round_fastest = math.inf
        self._round_lag = math.inf  # the least loop lag reported with the round's answers
        self._round_first_sent = math.inf
        self._round_size = max(self.limit, MIN_ROUND_SAMPLES)

    def _remember_rtt(self, rtt: float, now: float) -> None:
        window = self.config.rtt_window_s
        if self._bucket_start is None:
            self._bucket_start = now
        elif now - self._bucket_start >= window:  # both halves are stale
            self._rtt_min_before = self._rtt_min_now = math.inf
            self._bucket_start = now
        elif now - self._bucket_start >= window / 2:
            self._rtt_min_before = self._rtt_min_now
            self._rtt_min_now = math.inf
            self._bucket_start = now
        self._rtt_min_now = min(self._rtt_min_now, rtt)
