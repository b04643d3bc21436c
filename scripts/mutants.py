"""Apply each named security mutation to a copy of the tree and check that a test kills it.

A check that refuses access (password, OTP, principal, expiry, CA, role, token, lockout,
revocation) is protected only if removing it fails a test named after it (house style example
13). One temporary copy of the working tree is made (other work in the checkout is never
touched); for each mutation its file is changed there (one exact replacement that must match
exactly once, so a moved check fails loudly instead of silently testing nothing), its targeted
tests run with `pytest -x` on the copy, and the file is put back.

Before the mutants, the union of the targeted tests runs once unmutated: a test that already
fails would "kill" every mutant for the wrong reason.

Prints a table mutation -> killing test; exits 1 if any mutation survived or a run ended in an
error instead of a failed test, 2 if the code moved or the baseline is red.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
RUN_TIMEOUT = 600


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


_LOGINS = "teleport/auth/logins.py"
_RULES = "teleport/rbac/rules.py"
_SSH = "teleport/keys/ssh.py"
_SSO = "teleport/auth/sso.py"
_MFA_DEVICES = "teleport/services/mfa_devices.py"
_WEBAUTHN_TESTS = "tests/integration/auth/test_webauthn.py::"
_SSO_TESTS = "tests/integration/auth/test_sso_oidc.py::"
_SSH_TESTS = ("tests/unit/keys/test_ssh.py", "tests/unit/sshutils/test_auth.py")

MUTATIONS = (
    Mutation(
        "accept any password", _LOGINS,
        "ok = await asyncio.to_thread(passwords.password_matches, password,\n"
        "                                     pw_hash or passwords.dummy_hash())",
        "ok = True",
        # tests/e2e/test_walking_skeleton.py::test_wrong_password_is_refused_and_audited kills
        # it too (checked by hand; left out here for time: it starts a whole cluster).
        ("tests/unit/auth/test_server.py::test_wrong_password_otp_and_replay_are_refused_and_audited",)),
    Mutation(
        "accept any OTP", _LOGINS,
        "        if not pyotp.TOTP(secret).verify(normalized, for_time=self.ctx.clock.now(), valid_window=1):\n"
        "            return False\n",
        "",
        ("tests/unit/auth/test_server.py::test_wrong_password_otp_and_replay_are_refused_and_audited",)),
    Mutation(
        "accept a replayed OTP", _LOGINS,
        "        return await self.users.mark_totp_used(username, normalized,\n"
        "                                               self.ctx.clock.now() + OTP_REUSE_WINDOW)\n",
        "        return True\n",
        ("tests/unit/auth/test_server.py::test_wrong_password_otp_and_replay_are_refused_and_audited",)),
    Mutation(
        "skip the principal check", _RULES,
        "    if login not in principals:\n",
        "    if False:\n",
        ("tests/unit/rbac/test_rules.py", "tests/unit/sshutils/test_auth.py")),
    Mutation(
        "accept an expired certificate", _SSH,
        "    if ts >= loaded.valid_before:\n",
        "    if False:\n",
        _SSH_TESTS),
    Mutation(
        "accept a certificate of another CA", _SSH,
        "    if signer is None or not any(matches):\n",
        "    if signer is None:\n",
        _SSH_TESTS),
    Mutation(
        "accept a host certificate as a user certificate", _SSH,
        "    if info.cert_type != cert_type:\n",
        "    if False:\n",
        _SSH_TESTS),
    Mutation(
        "ignore token TTL", "teleport/auth/hosts.py",
        "expires=self.ctx.clock.now() + ttl),\n            spec=ProvisionTokenSpec(",
        "expires=None),\n            spec=ProvisionTokenSpec(",
        ("tests/unit/auth/test_join_tokens.py",)),
    Mutation(
        "allow a signup token twice", "teleport/auth/accounts.py",
        "        await self.tokens.claim_signup(token)\n",
        "",
        ("tests/unit/auth/test_server.py::test_signup_token_is_single_use_and_expires",
         "tests/unit/auth/test_login_security.py::test_two_signups_with_one_token_set_exactly_one_password")),
    Mutation(
        "judge a connection by another connection's certificate", "teleport/auth/api.py",
        "    known = _peers.get(ssl_object)\n",
        "    known = next(iter(_peers.values()), None)\n",
        ("tests/integration/auth/test_api.py::"
         "test_each_connection_is_judged_by_its_own_certificate",)),
    Mutation(
        "let a refused write take its group commit down", "teleport/backend/sqlite.py",
        "                except Exception as err:\n"
        "                    conn.execute(\"ROLLBACK TO one_write\")\n",
        "                except Exception as err:\n"
        "                    raise err\n",
        ("tests/unit/backend/test_sqlite.py",)),
    Mutation(
        "let a non-owner play a recording", _RULES,
        "    if not (_own(subject, owner) or _allows(subject, \"session\", \"read\")):\n"
        '        raise AccessDenied(f"only {owner!r} and roles allowing session read may play session {sid}")\n',
        "",
        ("tests/unit/rbac/test_rules.py", "tests/unit/auth/test_recording_access.py")),
    Mutation(
        "let a non-admin call an admin route", _RULES,
        "    raise AccessDenied(f\"{subject.kind.lower()} {subject.name!r} may not {method} {path}\")\n",
        "    return\n",
        ("tests/integration/auth/test_api.py::test_hosts_cannot_use_admin_calls_and_refusals_are_audited",
         "tests/integration/auth/test_events_api.py::test_non_admins_cannot_search")),
    Mutation(
        "let a user call a route their roles do not allow", _RULES,
        "        subject.access.check_rule(*rule)\n",
        "        pass\n",
        ("tests/integration/auth/test_api.py::"
         "test_a_user_whose_roles_do_not_allow_a_route_is_refused_and_audited",)),
    Mutation(
        "let an allow rule beat a deny rule", "teleport/rbac/roles.py",
        "            if any(_rule_matches(r, resource, verb) for r in deny.rules):\n",
        "            if False:\n",
        ("tests/unit/rbac/test_roles_laws.py",)),
    Mutation(
        "skip the node's role check", "teleport/srv/server.py",
        "        self.access(cert).check_node_login(self.nodename, self.labels(), login)\n",
        "        return\n",
        ("tests/integration/srv/test_revocation.py::"
         "test_a_role_change_ends_sessions_it_no_longer_admits_and_refuses_new_ones",)),
    Mutation(
        "issue a certificate with no principal", "teleport/auth/certs.py",
        "                principals=logins or [f\"{NO_LOGIN}-{uuid.uuid4()}\"],\n",
        "                principals=logins,\n",
        ("tests/unit/auth/test_certs_roles.py::"
         "test_a_user_without_logins_gets_a_principal_no_system_has",)),
    Mutation(
        "ignore max_session_ttl", "teleport/auth/certs.py",
        "MAX_CERT_TTL, access.max_session_ttl)",
        "MAX_CERT_TTL)",
        ("tests/unit/auth/test_certs_roles.py::test_max_session_ttl_caps_the_asked_ttl",)),
    Mutation(
        "show users every node", "teleport/auth/api.py",
        "    if kind == \"node\" and call.subject.kind == USER:\n",
        "    if False:\n",
        ("tests/integration/auth/test_resources_api.py::"
         "test_users_and_the_proxy_acting_for_them_list_only_nodes_their_roles_reach",)),
    Mutation(
        "ignore a node lock", "teleport/service/revocations.py",
        "                    or self.current.node_refusal(host_uuid, now))\n",
        "                    or None)\n",
        ("tests/integration/srv/test_revocation.py::"
         "test_a_node_lock_ends_every_session_on_the_node_and_refuses_new_ones",)),
    Mutation(
        "ignore user locks", "teleport/auth/access.py",
        "        if lock.in_force(now) and ((user and target.user == user) or\n",
        "        if lock.in_force(now) and ((False) or\n",
        ("tests/integration/auth/test_resources_api.py::"
         "test_a_user_lock_refuses_logins_calls_and_reaches_the_revocation_list",)),
    Mutation(
        "skip the lockout", "teleport/services/login_attempts.py",
        "        if len(failed) < self.policy.max_attempts:\n",
        "        if True:\n",
        ("tests/unit/auth/test_server.py::test_five_failures_lock_the_account_for_twenty_minutes",)),
    Mutation(
        "accept a non-auth TLS certificate as the auth server", "teleport/keys/tlsconfig.py",
        "    ctx.check_hostname = True\n",
        "    ctx.check_hostname = False\n",
        # Only a certificate with serverAuth and another name tells: every other cluster
        # certificate is clientAuth only, which the EKU check refuses first (the integration
        # impostor tests pass with this mutant for that reason).
        ("tests/unit/keys/test_tls.py::test_mtls_handshake_carries_the_client_identity",)),
    Mutation(
        "skip the revocation check", "teleport/sshutils/auth.py",
        "        reason = self.revoked(info)\n",
        "        reason = None\n",
        ("tests/unit/sshutils/test_revoked_certs.py",)),
    Mutation(
        "accept any web bearer token", "teleport/proxy/websession.py",
        "    if not bearer_matches(session.bearer_token, token):\n",
        "    if False:\n",
        ("tests/integration/proxy/test_web_sessions.py::"
         "test_calls_need_the_cookie_and_the_bearer_token_together",)),
    Mutation(
        "skip the web Origin check", "teleport/proxy/websession.py",
        "    if urlsplit(origin).netloc.lower() != request.host.lower():\n",
        "    if False:\n",
        ("tests/integration/proxy/test_web_sessions.py::"
         "test_a_state_change_from_another_origin_is_refused",)),
    Mutation(
        "let any host name the user's address to a node", "teleport/sshutils/clientaddr.py",
        "                            allowed=(Caller.PROXY,), cluster=cluster)\n",
        "                            allowed=(Caller.PROXY, Caller.NODE), cluster=cluster)\n",
        ("tests/unit/sshutils/test_clientaddr.py::"
         "test_only_a_proxy_of_this_cluster_may_name_an_address",)),
    Mutation(
        "accept an ID token of another login (nonce)", _SSO,
        '        if not hmac.compare_digest(str(claims.get("nonce", "")), request.nonce):\n',
        "        if False:\n",
        (_SSO_TESTS + "test_wrong_nonce_audience_issuer_or_expiry_are_refused",)),
    Mutation(
        "accept an ID token for another client (audience)", _SSO,
        "        if connector.spec.client_id not in audiences:\n",
        "        if False:\n",
        (_SSO_TESTS + "test_wrong_nonce_audience_issuer_or_expiry_are_refused",)),
    Mutation(
        "let a login state be used twice", "teleport/services/sso_requests.py",
        "        await self.backend.delete(item.key)  # NotFound when another callback took it first\n",
        "",
        (_SSO_TESTS + "test_a_replayed_or_forged_state_is_refused_and_audited",)),
    Mutation(
        "send tsh's certificates to any address", _SSO,
        "    if (parts.scheme != \"http\" or host not in _LOOPBACK_CALLBACK_HOSTS or parts.port is None\n",
        "    if (False and parts.port is None\n",
        (_SSO_TESTS + "test_tshs_answer_may_only_go_to_a_loopback_callback",)),
    Mutation(
        "accept a WebAuthn counter that went backwards (cloned key)", _MFA_DEVICES,
        "            if (stored or counter) and counter <= stored:\n",
        "            if False:\n",
        (_WEBAUTHN_TESTS + "test_counter_going_backwards_is_refused",)),
    Mutation(
        "let a WebAuthn challenge be answered twice", _MFA_DEVICES,
        "            await self.backend.delete(item.key)  # NotFound when another finish took it first\n",
        "",
        (_WEBAUTHN_TESTS + "test_replayed_assertion_is_refused",)),
    Mutation(
        "give CA keys and users' password hashes to a user's profile", _RULES,
        "    if admin_only and subject.kind != Caller.ADMIN:",
        "    if False:",
        ("tests/integration/auth/test_bootstrap.py::"
         "test_a_users_profile_never_gets_ca_keys_or_credentials_whatever_its_roles",)),
    Mutation(
        "initialise a backend another auth server just initialised", "teleport/auth/bootstrap.py",
        "        if await initialised(backend):  # another auth server did it while we waited",
        "        if False:",
        ("tests/integration/auth/test_bootstrap.py::test_both_with_bootstrap_apply_the_file_once",
         "tests/integration/auth/test_bootstrap.py::"
         "test_two_auth_servers_starting_at_once_make_one_set_of_cas")),
    Mutation(
        "step a CA rotation to any phase", "teleport/types/rotation.py",
        "    if wanted in allowed:\n        return\n",
        "    return\n",
        ("tests/unit/types/test_rotation.py::test_a_phase_out_of_order_names_the_allowed_ones",
         "tests/integration/auth/test_rotation.py::test_refusals_name_the_problem_and_change_nothing")),
    Mutation(
        "keep trusting the old CA after a rotation", "teleport/auth/rotation.py",
        "            extra = CAKeys()\n",
        "            pass\n",
        ("tests/integration/auth/test_rotation.py::"
         "test_manual_rotation_moves_signing_and_trust_phase_by_phase",)),
    Mutation(
        "run on a newer stored schema", "teleport/auth/migrations.py",
        "    if version > SCHEMA_VERSION:\n",
        "    if False:\n",
        ("tests/integration/auth/test_migrations.py::"
         "test_a_newer_schema_is_refused_in_one_line_and_nothing_is_written",)),
    Mutation(
        "accept a node newer than its auth server", "teleport/auth/hosts.py",
        "    if newer:\n        raise NotSupported(",
        "    if False:\n        raise NotSupported(",
        ("tests/integration/auth/test_component_versions.py::"
         "test_a_host_of_a_newer_major_version_cannot_join",)),
    Mutation(
        "accept a broken SSH algorithm in teleport.yaml", "teleport/config/sshalgos.py",
        "        if BROKEN.fullmatch(name):\n",
        "        if False:\n",
        ("tests/unit/config/test_ssh_algorithms.py::"
         "test_broken_algorithms_are_refused_in_one_located_line",)),
    Mutation(
        "offer SHA-1 ssh-rsa host keys", "teleport/sshutils/listener.py",
        "        pair.host_key_algorithms = sshalgos.host_key_algorithms(pair.host_key_algorithms)\n",
        "        pass\n",
        ("tests/unit/sshutils/test_algorithms.py::"
         "test_sha1_and_other_algorithms_outside_the_set_are_refused",)),
    Mutation(
        "serve asyncssh's default SSH algorithms", "teleport/config/sshalgos.py",
        '        "kex_algs": list(algorithms.kex_algos), "encryption_algs": list(algorithms.ciphers),\n'
        '        "mac_algs": list(algorithms.mac_algos), "compression_algs": ["none"],\n',
        '        "compression_algs": ["none"],\n',
        ("tests/unit/sshutils/test_algorithms.py::"
         "test_sha1_and_other_algorithms_outside_the_set_are_refused",)),
    Mutation(
        "serve TLS with CBC suites", "teleport/keys/tlsconfig.py",
        "    ctx.set_ciphers(TLS12_CIPHERS)\n",
        "    pass\n",
        ("tests/unit/keys/test_tls_profile.py::test_servers_refuse_cbc_and_non_ecdhe_suites",)),
    Mutation(
        "let one address hold any number of unauthenticated connections", "teleport/api/throttle.py",
        "        if state.pending >= self.max_pending:\n",
        "        if False:\n",
        ("tests/unit/api/test_throttle.py::test_over_the_pending_cap_is_refused_until_one_leaves",)),
    Mutation(
        "pace no handshakes", "teleport/api/throttle.py",
        "        if any(t < 1.0 for t in state.tokens):\n",
        "        if False:\n",
        ("tests/unit/api/test_throttle.py::test_burst_goes_at_once_then_one_per_token",)),
    Mutation(
        "let a session that ignores its hang-up go on unrecorded", "teleport/srv/session.py",
        "        child.signal(signal.SIGKILL)  # a no-op once it has exited\n",
        "        pass\n",
        ("tests/integration/srv/test_sync_recording.py::"
         "test_a_session_that_ignores_its_hang_up_is_killed_when_it_cannot_be_recorded",)),
    Mutation(
        "let a leaf's host CA vouch for any tunnel agent", "teleport/sshutils/reversetunnel.py",
        "                                allowed=(Caller.PROXY,), cluster=leaf, login=login)\n",
        "                                allowed=(Caller.NODE, Caller.PROXY), cluster=authority, "
        "login=login)\n",
        ("tests/unit/sshutils/test_cluster_trust.py::"
         "test_a_leaf_cannot_pass_for_one_of_our_hosts_nor_tunnel_a_node",)),
    Mutation(
        "skip the validation token of a trusted cluster", "teleport/auth/trustedclusters.py",
        "            await self.hosts.check_token(request.token, TRUSTED_CLUSTER)\n",
        "            pass\n",
        ("tests/integration/auth/test_trusted_clusters.py::"
         "test_a_wrong_token_is_refused_and_audited_by_the_root",)),
    Mutation(
        "let a root user in with the root's roles, unmapped", "teleport/service/trust.py",
        "                mapped = map_roles(root.spec.role_map, cert.roles)\n",
        "                mapped = list(cert.roles)\n",
        ("tests/e2e/test_trusted_clusters.py::"
         "test_a_login_the_mapped_role_does_not_allow_is_refused_by_the_leaf",)),
    Mutation(
        "take a root's hosts and admins on a leaf's auth API", "teleport/auth/trustedclusters.py",
        "        if identity.system_role or identity.cluster != cluster:\n",
        "        if False:\n",
        ("tests/integration/auth/test_trusted_clusters.py::"
         "test_the_roots_hosts_and_admins_are_nobody_on_the_leafs_api",)),
    Mutation(
        "believe the cluster a client certificate claims", "teleport/auth/api.py",
        "        root = await auth.trusted_clusters.issuing_root(peer.der)\n",
        "        root = None\n",
        ("tests/integration/auth/test_trusted_clusters.py::"
         "test_the_roots_hosts_and_admins_are_nobody_on_the_leafs_api",)),
    Mutation(
        "stop following a leaf's CA rotations", "teleport/service/leafclusters.py",
        "                await client.update_leaf_cas(name, json.loads(await tunnels.leaf_cas(name)))\n",
        "                pass\n",
        ("tests/e2e/test_trusted_clusters.py::"
         "test_a_rotation_on_either_side_is_followed_by_the_other",)),
    Mutation(
        "stop following a root's CA rotations", "teleport/auth/trustedclusters.py",
        "                    await self.refresh_root(tc)\n",
        "                    pass\n",
        ("tests/e2e/test_trusted_clusters.py::"
         "test_a_rotation_on_either_side_is_followed_by_the_other",)),
    Mutation(
        "let a lock on a leaf's mapped role miss a root's users", "teleport/service/revocations.py",
        "                    roles += [r for r in roles_of(cert) if r not in roles]\n",
        "                    pass\n",
        ("tests/e2e/test_trusted_clusters.py::"
         "test_a_lock_on_the_mapped_role_in_the_leaf_holds_for_root_users",)),
    Mutation(
        "dial the roots with a leaf proxy's certificate of before a rotation",
        "teleport/service/process.py",
        "            leaves.use_identity(new.ssh_private_key, new.ssh_cert)\n",
        "            pass\n",
        ("tests/e2e/test_trusted_clusters.py::"
         "test_a_rotation_on_either_side_is_followed_by_the_other",)),
    Mutation(
        "let a host's second upload replace a recording in the shared store",
        "teleport/events/shared_recordings.py",
        "        shipped = not self.remote.exists(events_name)\n",
        "        shipped = True\n",
        ("tests/integration/events/test_shared_recordings.py::"
         "test_the_store_keeps_the_first_copy_of_a_recording",)),
    Mutation(
        "drop a staged recording although the store never got it",
        "teleport/events/shared_recordings.py",
        "            self.remote.put_file(events_name, events)\n",
        "            pass\n",
        ("tests/integration/events/test_shared_recordings.py::"
         "test_a_recording_is_shipped_to_the_store_and_streamed_back",)),
)


def copy_tree(dest: Path) -> None:
    """Copy the working tree as it is (tracked and new files, not ignored ones) into dest."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True)
    if listed.returncode != 0:  # an exported tree without .git: copy it all but the caches
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", ".*_cache", ".hypothesis"))
        return
    for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def check_applies(tree: Path, mutations: tuple[Mutation, ...]) -> list[str]:
    """Return one problem per mutation whose old text is not found exactly once."""
    problems = []
    for m in mutations:
        count = (tree / m.path).read_text().count(m.old)
        if count != 1:
            problems.append(f"{m.name}: expected its text once in {m.path}, found {count} times "
                            "(the check moved: update scripts/mutants.py)")
        for test in m.tests:
            if not (tree / test.split("::")[0]).exists():
                problems.append(f"{m.name}: test file {test.split('::')[0]} does not exist")
    return problems


def run_pytest(tree: Path, tests: tuple[str, ...] | list[str]) -> tuple[int, str]:
    """Run tests in the copy (imports resolve there first), stopping at the first failure."""
    # Wide enough that pytest does not cut test ids in its summary.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "300"}
    try:
        result = subprocess.run(
            # `-m ""`: a named test runs even when it is marked slow (left out by default).
            [str(PYTHON), "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider",
             "-m", "", *tests],
            cwd=tree, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout
        return -1, f"timed out after {RUN_TIMEOUT}s\n{out or ''}"
    return result.returncode, result.stdout + result.stderr


def killer(output: str) -> tuple[str, str]:
    """Return ("killed", test id) for a failed test, ("error", what) for a crash, else survived."""
    failed = re.findall(r"^FAILED (.+?)(?: - .*)?$", output, re.MULTILINE)
    if failed:
        return "killed", failed[0]
    errors = re.findall(r"^ERROR (.+?)(?: - .*)?$", output, re.MULTILINE)
    if errors:
        return "error", errors[0]
    return "survived", ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutants", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only mutations whose name contains NAME (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args(argv)
    chosen = tuple(m for m in MUTATIONS if not args.only or any(o in m.name for o in args.only))
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name}: {m.path}")
        return 0
    if not chosen:
        print("ERROR: no mutation matches --only", file=sys.stderr)
        return 2
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mutants-"))
    try:
        copy_tree(tmp)
        problems = check_applies(tmp, chosen)
        if problems:
            for problem in problems:
                print(f"ERROR: {problem}", file=sys.stderr)
            return 2
        union = list(dict.fromkeys(t for m in chosen for t in m.tests))
        code, output = run_pytest(tmp, union)
        if code != 0:
            print(f"ERROR: the targeted tests fail without any mutation:\n{output[-3000:]}",
                  file=sys.stderr)
            return 2
        rows = []
        for m in chosen:
            path = tmp / m.path
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            t0 = time.monotonic()
            try:
                code, output = run_pytest(tmp, m.tests)
            finally:
                path.write_text(original)
            if code == -1:
                verdict, test = "error", "timed out"
            else:
                verdict, test = killer(output) if code != 0 else ("survived", "")
            rows.append((m.name, verdict, test, time.monotonic() - t0))
            if verdict != "killed":
                print(f"--- {m.name}: {verdict}\n{output[-2000:]}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"copy kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'mutation'.ljust(width)}  result    killed by")
    for name, verdict, test, seconds in rows:
        print(f"{name.ljust(width)}  {verdict.upper() if verdict != 'killed' else 'killed':8}  "
              f"{test}  ({seconds:.0f}s)")
    bad = [r for r in rows if r[1] != "killed"]
    print(f"{len(rows) - len(bad)}/{len(rows)} mutations killed in "
          f"{time.monotonic() - started:.0f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
