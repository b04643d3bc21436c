"""Who may do what: every access decision of the cluster as a pure function (no I/O).

Callers gather the facts (the verified certificate, the user as stored now, the owner of the
object) and ask one function here; the function answers or raises `AccessDenied`, and the
caller's edge audits the refusal. `subject` says who asks, `rules` decides. The roles issue
extends `rules` to full Teleport roles (allow/deny, labels, options); what is decided today is
what Teleport's preset roles give: role `admin` sees and joins every session, a user sees their
own, and each API route names the system roles that may call it. What binds an object to the
host that wrote it (a host name, a live session) is enforced where it is stored, in one
compare-and-swap (`teleport.services.claims`), since the check and the write must be one step.
"""
