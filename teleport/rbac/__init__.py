"""Who may do what: every access decision of the cluster as a pure function (no I/O).

Callers gather the facts (the verified certificate, the user as stored now, the owner of the
object) and ask one function here; the function answers or raises `AccessDenied`, and the
caller's edge audits the refusal. `subject` says who asks, `roles` says what a user's Teleport
roles allow (allow/deny, labels, rules, options), `rules` decides each question with both: each
API route names the kinds of caller and the rule of the roles it needs. What binds an object to the
host that wrote it (a host name, a live session) is enforced where it is stored, in one
compare-and-swap (`teleport.services.claims`), since the check and the write must be one step.
"""

#: The roles a user gets when `tctl users add` names none: their own logins on every node,
#: nothing else (Teleport's preset `access`), so no one is an administrator by accident. Here,
#: not in `subject`, so that `tctl users` can show it without loading the role models.
DEFAULT_USER_ROLES = ("access",)
