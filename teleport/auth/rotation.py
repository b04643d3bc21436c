"""Rotating the cluster's CAs: the phases of `teleport.types.rotation` applied to the stored CA
records, by an admin (`tctl auth rotate`) or, in automatic mode, by the auth server's clock.

Each CA moves alone (user, host, tls), with one compare-and-swap per step, so that several auth
servers on one store never apply a step twice. Hosts and users follow the records: nodes and
proxies re-issue their certificates (`teleport.service.rotation`), tsh refreshes what it trusts.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta

from teleport.auth import authority
from teleport.auth.context import AuthContext
from teleport.errors import BadParameter, CompareFailed, NotFound
from teleport.services.authorities import CAService
from teleport.types.resources import CAKeys, CertAuthority
from teleport.types.rotation import (
    DEFAULT_GRACE_PERIOD,
    NEXT,
    Mode,
    Phase,
    Rotation,
    RotationSchedule,
    check_transition,
)
from teleport.utils.duration import format_duration

log = logging.getLogger("teleport.auth.rotation")

CERT_ROTATE = "cert.rotate"
#: Shortest grace period: hosts need a few of their checks to follow each phase.
MIN_GRACE_PERIOD = timedelta(seconds=3)
#: How often the auth server looks whether an automatic rotation is due for its next phase.
TICK = 1.0
#: How often a compare-and-swap that lost a race is tried again before giving up.
_RETRIES = 5


class Rotations:
    """Starts, steps and finishes rotations; every step is audited as `cert.rotate`."""

    def __init__(self, ctx: AuthContext, cas: CAService) -> None:
        self.ctx = ctx
        self.cas = cas

    async def rotate(self, who: str, ca_types: Sequence[str], mode: Mode, phase: Phase | None,
                     grace_period: timedelta | None) -> list[CertAuthority]:
        """Apply an admin's request to each CA named; all are checked before any changes.

        Automatic mode only starts a rotation (phase init, or none given); manual mode moves
        to the phase given. Returns the CAs as they now are, public parts only.
        """
        for ca_type in ca_types:
            if ca_type not in authority.CA_TYPES:
                raise BadParameter(f"unknown CA type {ca_type!r}: use user, host, tls or all")
        if grace_period is not None and grace_period < MIN_GRACE_PERIOD:
            raise BadParameter(f"--grace-period must be at least {format_duration(MIN_GRACE_PERIOD)}")
        if mode is Mode.AUTO and phase not in (None, Phase.INIT):
            raise BadParameter("--phase needs --manual: an automatic rotation moves its phases itself")
        if mode is Mode.MANUAL and phase is None:
            raise BadParameter("--manual needs --phase (init, update_clients, update_servers, "
                               "standby or rollback)")
        wanted = phase or Phase.INIT
        current = {t: await self._get(t) for t in ca_types}
        for ca_type, ca in current.items():
            check_transition(ca_type, ca.spec.rotation.phase, wanted)
        changed = []
        for ca_type in ca_types:
            ca = await self._step(ca_type, wanted, who, mode=mode, grace_period=grace_period)
            changed.append(ca.without_secrets())
        return changed

    async def advance_due(self) -> None:
        """Move every automatic rotation whose next phase is due (run each `TICK`)."""
        now = self.ctx.clock.now()
        for ca_type in authority.CA_TYPES:
            try:
                ca = await self._get(ca_type)
            except NotFound:
                continue
            rotation = ca.spec.rotation
            if not rotation.in_progress or rotation.mode != Mode.AUTO:
                continue
            due = rotation.schedule.due(rotation.phase)
            if due is None or due > now:
                continue
            try:
                await self._step(ca_type, NEXT[rotation.phase][0], "system",
                                 expect_phase=rotation.phase)
            except CompareFailed:
                continue  # another auth server stepped it first

    async def _get(self, ca_type: str) -> CertAuthority:
        return await self.cas.get(ca_type, self.ctx.cluster_name)

    async def _step(self, ca_type: str, phase: Phase, who: str, *, mode: Mode | None = None,
                    grace_period: timedelta | None = None,
                    expect_phase: Phase | None = None) -> CertAuthority:
        """Move one CA to `phase` with compare-and-swap, generating keys for init."""
        store = self.cas.store(ca_type)
        fresh: tuple[CAKeys, str] | None = None
        for _ in range(_RETRIES):
            ca, item = await store.get_with_item(self.ctx.cluster_name)
            current = ca.spec.rotation.phase
            if expect_phase is not None and current != expect_phase:
                raise CompareFailed(f"the {ca_type} CA moved on to {current}")
            check_transition(ca_type, current, phase)
            if phase is Phase.INIT and fresh is None:
                fresh = await authority.new_keys(ca_type, self.ctx.cluster_name, self.ctx.clock,
                                                 self.ctx.settings.ca_signature_algo)
            updated = self._moved(ca, phase, fresh, mode, grace_period)
            try:
                await store.swap(item, updated)
            except CompareFailed:
                continue
            rotation = updated.spec.rotation
            log.info("Rotation of the %s CA: phase %s (%s mode).", ca_type, phase,
                     rotation.mode or ca.spec.rotation.mode)
            await self.ctx.audit(CERT_ROTATE, who, ca_type=ca_type, phase=str(phase),
                                 previous_phase=str(current),
                                 mode=rotation.mode or ca.spec.rotation.mode,
                                 rotation_id=rotation.current_id or ca.spec.rotation.current_id,
                                 grace_period=format_duration(rotation.grace_period),
                                 cluster_name=self.ctx.cluster_name)
            return updated
        raise CompareFailed(f"the {ca_type} CA kept changing: try again")

    def _moved(self, ca: CertAuthority, phase: Phase, fresh: tuple[CAKeys, str] | None,
               mode: Mode | None, grace_period: timedelta | None) -> CertAuthority:
        """The CA record after one step: which keys sign, which are trusted, the rotation."""
        spec = ca.spec
        rotation = spec.rotation
        active, extra, alg = spec.active_keys, spec.additional_trusted_keys, spec.signing_alg
        now = self.ctx.clock.now()
        if phase is Phase.INIT:
            assert fresh is not None
            period = grace_period or DEFAULT_GRACE_PERIOD
            rotation = Rotation(
                state="in_progress", phase=phase, mode=mode or Mode.AUTO,
                current_id=str(uuid.uuid4()), started=now, grace_period=period,
                last_rotated=rotation.last_rotated,
                schedule=RotationSchedule.spread(now, period))
            return ca.model_copy(update={"spec": spec.model_copy(update={
                "additional_trusted_keys": fresh[0], "rotation": rotation})})
        # update_clients: the new pair signs; rollback: the old one again (it still does in
        # init). Both stay trusted until standby.
        if phase is Phase.UPDATE_CLIENTS or (phase is Phase.ROLLBACK
                                             and rotation.phase is not Phase.INIT):
            active, extra = extra, active
            alg = authority.signing_alg(active, self.ctx.settings.ca_signature_algo)
        update: dict[str, object] = {"phase": phase}
        if mode is not None:
            update["mode"] = mode
        if phase is Phase.STANDBY:
            extra = CAKeys()
            update.update(state="standby", schedule=RotationSchedule(),
                          last_rotated=rotation.last_rotated if rotation.phase is Phase.ROLLBACK
                          else now)  # a rollback rotated nothing
        return ca.model_copy(update={"spec": spec.model_copy(update={
            "active_keys": active, "additional_trusted_keys": extra, "signing_alg": alg,
            "rotation": rotation.model_copy(update=update)})})
