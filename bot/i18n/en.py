"""English message catalog. Keys and {placeholders} must match zh_CN.py (a unit test checks)."""

MESSAGES: dict[str, str] = {
    "action.send_event": "Your message was not sent",
    "action.invite": "Your invitation was not sent",
    "action.create_room": "The room was not created",
    "action.publish_room": "The room was not published to the directory",
    "deny.not_agreed": (
        "{what}: you have not accepted the service agreement (version {version}) yet. "
        "Open your direct chat with {bot} and send !agree (or react ✅ to the agreement message)."
    ),
    "deny.agreement_outdated": (
        "{what}: the service agreement has changed (now version {version}) and you have not "
        "accepted the new version yet. Open your direct chat with {bot} and send !agree "
        "(or react ✅ to the agreement message)."
    ),
    "agreement.intro": (
        "Welcome. Before you can post, invite people, or create or publish rooms, please read "
        "and accept the service agreement (version {version}):"
    ),
    "agreement.how_to_accept": (
        "To accept, send !agree (or !同意) here, or react ✅ to this message. Until then you can "
        "read and join rooms, and talk to me in this chat. !help lists what I can do."
    ),
    "agreement.operator": "Service operated by {name}. Licence: {licence}.",
    "agree.confirmed": (
        "Thank you. Your acceptance of agreement version {version} was recorded at {time}. "
        "You can now use the service fully."
    ),
    "agree.already": "You already accepted agreement version {version} (at {time}). Nothing more to do.",
    "agree.exempt": "You are {role}; the agreement gate does not apply to you.",
    "agree.stale_reaction": (
        "That message is an older version of the agreement. Please react ✅ to the current "
        "version (version {version}) or send !agree."
    ),
    "role.moderator": "a moderator",
    "role.bot": "this service's bot",
    "status.agreed": "Agreement: version {version} accepted at {time}.",
    "status.outdated": (
        "Agreement: you accepted version {old}; the current version is {version}. "
        "Send !agree to accept it."
    ),
    "status.not_agreed": "Agreement: not accepted yet (current version {version}). Send !agree to accept it.",
    "status.exempt": "Role: {role}. The agreement gate does not apply to you.",
    "status.muted": "Posting is paused for you in {count} protected room(s) until you accept the agreement.",
    "help.header": "What you can do:",
    "help.line": "{usage} — {summary}",
    "help.footer": "Every command also has a Chinese name, for example !同意 for !agree.",
    "cmd.agree.summary": "accept the current service agreement",
    "cmd.rules.summary": "show the service agreement again",
    "cmd.status.summary": "show your account's status",
    "cmd.help.summary": "show this list",
    "cmd.unknown": "I do not know the command {command}. Send !help for the list.",
    "cmd.usage": "Usage: {usage}",
    "cmd.forbidden": "{command} is for moderators only.",
    "cmd.failed": "Something went wrong while handling {command}. It has been logged; please try again later.",
    "roommode.redacted": (
        "Your message in {room} was removed because you have not accepted the service agreement "
        "(version {version}) yet. Send !agree here to accept it; you can post again right after."
    ),
    "time.never": "never",
}
