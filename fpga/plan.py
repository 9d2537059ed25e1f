"""Folding planner: a reuse factor per conv, the counterpart of FINN's SetFolding / ``target_fps``.

Every conv runs hls4ml's Resource kernel (weights in block RAM). A conv at reuse factor RF costs
``stage_cycles(RF)`` cycles per image and ``block_factor(RF)`` multipliers; the pipeline runs at the pace
of its slowest stage. For a bottleneck budget of T cycles per image the cheapest plan gives every conv
the largest valid RF that meets T; the planner finds the smallest T whose plan keeps every resource
estimate within ``share`` of the part (or, given ``target_fps``, the plan for that T alone).

With ``bind_dsp`` the planner also chooses, for each plan it tries, which convs get their multipliers bound
to DSP48s (issue 26's lever 4): a plan's reuse factors fix each conv's products, and binding a conv trades
its LUT products (and their operand registers) for one DSP each. Greedily, the convs that free the most
LUTs per DSP first, as long as the part's DSPs (within the share, less what other stages use) hold them.
Binding never costs LUTs or FFs, so a plan that fits unbound fits bound: the result is never slower.

Only reuse factors hls4ml accepts are used (``valid_reuse_factors``, the rule of hls4ml 1.3.0's
``FPGABackend._validate_reuse_factor``), never RF 1 (no BRAM ROM pragma: the weights would become
registers) and never more than MAX_MULTIPLIERS parallel multipliers in one layer (hls4ml's maintainers
put the practical unroll limit of the HLS tools at ~4,096, hls4ml issue #1013).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

from contract import UserError

from .costs import Cost, Estimate
from .cycles import stage_cycles
from .devices import RESOURCES, Device
from .estimate import block_factor, conv_cost, estimate
from .pipeline import Pipeline, Stage

MAX_MULTIPLIERS = 4096


class PlanError(UserError):
    """No folding meets the request; the message says which resource or target is out of reach."""


def valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """Reuse factors hls4ml 1.3.0 keeps for a dense kernel n_in x n_out (``fpga_backend.py``,
    ``_validate_reuse_factor``): RF divides n_in * n_out and either RF < n_in with the multiplier count a
    multiple of n_out, or RF a multiple of n_in."""
    total = n_in * n_out
    valid = []
    for rf in _divisors(total):
        multipliers = -(-total // min(n_in, rf))
        if (multipliers % n_out == 0 or rf >= n_in) and (rf % n_in == 0 or rf < n_in):
            valid.append(rf)
    return valid


def _divisors(n: int) -> list[int]:
    small, large = [], []
    i = 1
    while i * i <= n:
        if n % i == 0:
            small.append(i)
            if i * i != n:
                large.append(n // i)
        i += 1
    return small + large[::-1]


def candidate_reuse_factors(stage: Stage, max_multipliers: int = MAX_MULTIPLIERS) -> list[int]:
    return [rf for rf in valid_reuse_factors(stage.n_in, stage.n_out)
            if rf > 1 and block_factor(stage.n_in, stage.n_out, rf) <= max_multipliers]


@dataclass
class Plan:
    reuse_factors: dict[str, int]  # conv stage name -> RF
    estimate: Estimate
    target_cycles: int | None  # the bottleneck budget the plan was made for
    searched: int  # bottleneck budgets tried
    dsp_layers: frozenset[str] = frozenset()  # convs whose multipliers the plan binds to DSP48s (bind_dsp)

    def to_dict(self) -> dict:
        return {"reuse_factors": dict(self.reuse_factors), "target_cycles": self.target_cycles,
                "budgets_tried": self.searched, "dsp_layers": sorted(self.dsp_layers)}


class _Folding:
    """Per-conv costs for every candidate RF, computed once, so that a plan's totals are sums; with
    ``bind_dsp`` also each cost with the conv's multipliers bound to DSP48s."""

    def __init__(self, pipeline: Pipeline, device: Device, max_multipliers: int, bind_dsp: bool = False):
        self.convs = pipeline.convs
        self.options: dict[str, list[tuple[int, int, Cost]]] = {}  # name -> [(cycles, rf, cost)] by cycles
        self.bound: dict[tuple[str, int], Cost] = {}  # (name, rf) -> cost with DSP-bound multipliers
        for stage in self.convs:
            rfs = candidate_reuse_factors(stage, max_multipliers)
            if not rfs:
                raise PlanError(f"{stage.name} ({stage.n_in}x{stage.n_out}) has no reuse factor hls4ml accepts "
                                f"with at most {max_multipliers} multipliers")
            opts = sorted((stage_cycles(stage, rf), rf, conv_cost(stage, rf, device)[0]) for rf in rfs)
            self.options[stage.name] = opts
            if bind_dsp and not stage.multipliers_bound_to_dsp:
                on_dsp = replace(stage, multipliers_bound_to_dsp=True)
                for _, rf, cost in opts:
                    with_dsp = conv_cost(on_dsp, rf, device)[0]
                    if with_dsp.dsp > cost.dsp and with_dsp.lut < cost.lut:  # products the tools left in LUTs
                        self.bound[stage.name, rf] = with_dsp
        self.floor = max((stage_cycles(s, s.reuse_factor) for s in pipeline.stages if s.kind != "conv"), default=1)

    def cost(self, name: str, rf: int, dsp_layers: frozenset[str] = frozenset()) -> Cost:
        if name in dsp_layers:
            return self.bound[name, rf]
        return next(cost for _, r, cost in self.options[name] if r == rf)

    def binding(self, plan: dict[str, int], dsp_room: float) -> frozenset[str]:
        """The convs to bind to DSPs under ``plan``: most LUTs freed per extra DSP first, within
        ``dsp_room`` extra DSPs."""
        gains = []
        for name, rf in plan.items():
            if (name, rf) in self.bound:
                unbound, bound = self.cost(name, rf), self.bound[name, rf]
                gains.append(((unbound.lut - bound.lut) / (bound.dsp - unbound.dsp), bound.dsp - unbound.dsp, name))
        chosen, used = set(), 0
        for _, extra, name in sorted(gains, key=lambda g: (-g[0], g[2])):
            if used + extra <= dsp_room:
                chosen.add(name)
                used += extra
        return frozenset(chosen)

    def budgets(self) -> list[int]:
        """Every bottleneck value a plan can have, fastest first."""
        values = {c for opts in self.options.values() for c, _, _ in opts}
        return sorted(v for v in values | {self.floor} if v >= self.floor)

    def fastest_budget(self) -> int:
        """The smallest bottleneck any plan reaches: every conv at its fastest RF, or a non-conv stage."""
        return max([self.floor] + [opts[0][0] for opts in self.options.values()])

    def plan_for(self, budget: int) -> dict[str, int] | None:
        """Largest RF per conv with at most ``budget`` cycles; None if some conv cannot meet it."""
        plan = {}
        for name, opts in self.options.items():
            i = bisect.bisect_right([c for c, _, _ in opts], budget) - 1
            if i < 0:
                return None
            plan[name] = max(rf for c, rf, _ in opts[: i + 1] if c <= budget)
        return plan

    def conv_totals(self, plan: dict[str, int], dsp_layers: frozenset[str] = frozenset()) -> Cost:
        total = Cost()
        for name, rf in plan.items():
            total = total + self.cost(name, rf, dsp_layers)
        return total


def plan_folding(pipeline: Pipeline, device: Device, *, share: float = 0.8, target_fps: float | None = None,
                 clock_mhz: float = 100.0, depths: dict[str, int] | None = None,
                 max_multipliers: int = MAX_MULTIPLIERS, bind_dsp: bool = False) -> Plan:
    """The folding plan: with ``target_fps``, the cheapest plan that reaches it; without, the fastest plan
    whose every resource estimate stays within ``share`` of ``device``. With ``bind_dsp``, also the convs
    whose multipliers go to DSP48s (``Plan.dsp_layers``; the plan's estimate has them bound). Raises
    PlanError naming what does not fit."""
    if not 0 < share <= 1:
        raise UserError(f"the resource share must be in (0, 1], got {share}")
    folding = _Folding(pipeline, device, max_multipliers, bind_dsp)
    if not folding.options:
        raise PlanError(f"{pipeline.name} has no conv layer to fold")
    # Everything but the convs' own cost is fixed by the pipeline and the FIFO depths.
    base = estimate(pipeline, {s.name: folding.options[s.name][-1][1] for s in folding.convs}, device,
                    depths=depths, share=share, clock_mhz=clock_mhz)
    fixed = base.totals
    for layer in base.layers:
        if layer.kind == "conv":
            fixed = fixed - layer.cost
    limits = {name: share * value for name, value in device.available().items()}

    def binding(plan: dict[str, int]) -> frozenset[str]:
        if not bind_dsp:
            return frozenset()
        return folding.binding(plan, limits["dsp"] - fixed.dsp - folding.conv_totals(plan).dsp)

    def fits(plan: dict[str, int]) -> bool:
        total = fixed + folding.conv_totals(plan, binding(plan))
        return all(getattr(total, name) <= limits[name] for name in RESOURCES)

    def planned(plan: dict[str, int], budget: int | None, tried: int) -> Plan:
        dsp_layers = binding(plan)
        est = estimate(pipeline.with_multipliers_on_dsp(dsp_layers), plan, device, depths=depths, share=share,
                       clock_mhz=clock_mhz)
        return Plan(plan, est, budget, tried, dsp_layers)

    budgets = folding.budgets()
    if target_fps is not None:
        if target_fps <= 0:
            raise UserError(f"the target frame rate must be positive, got {target_fps}")
        budget = int(clock_mhz * 1e6 / target_fps)
        plan = folding.plan_for(budget)
        if plan is None:
            fastest = folding.fastest_budget()
            raise PlanError(f"{target_fps:,.0f} images/s at {clock_mhz:g} MHz needs {budget:,} cycles per image; "
                            f"the fastest plan hls4ml allows needs {fastest:,} ({clock_mhz * 1e6 / fastest:,.0f} "
                            f"images/s)")
        result = planned(plan, budget, 1)
        if not result.estimate.fits:
            raise PlanError(f"{target_fps:,.0f} images/s does not fit {device.part} within {share:.0%}: "
                            + describe_over(result.estimate))
        return result
    tried = 0
    for budget in budgets:
        plan = folding.plan_for(budget)
        if plan is None:
            continue
        tried += 1
        if fits(plan):
            return planned(plan, budget, tried)
    result = planned(folding.plan_for(budgets[-1]), budgets[-1], tried).estimate
    raise PlanError(f"no folding of {pipeline.name} fits {device.part} within {share:.0%}: even the slowest "
                    f"plan ({result.images_per_second:,.0f} images/s) needs " + describe_over(result))


def dsp_binding(pipeline: Pipeline, plan: dict[str, int], device: Device, share: float = 0.8) -> frozenset[str]:
    """The convs ``plan_folding(bind_dsp=True)`` binds to DSP48s under ``plan``, for a plan made elsewhere
    (the step-down search): the DSPs within ``share`` less those of the other stages and unbound convs."""
    folding = _Folding(pipeline, device, MAX_MULTIPLIERS, bind_dsp=True)
    used = estimate(pipeline, plan, device).totals.dsp  # FIFOs use no DSPs: their depths do not matter
    return folding.binding(plan, share * device.dsp - used)


def describe_over(result: Estimate) -> str:
    """'LUT 61,200 of 42,560 allowed (+18,640), ...' for every resource over the estimate's share."""
    parts = []
    for name, (value, allowed) in result.over().items():
        parts.append(f"{name.upper()} {value:,} of {allowed:,.0f} allowed (+{value - allowed:,.0f})")
    return "; ".join(parts) or "nothing (it fits)"
