"""English message catalog. Keys and {placeholders} must match zh_CN.py (a unit test checks)."""

MESSAGES: dict[str, str] = {
    "action.send_event": "Your message was not sent",
    "action.invite": "Your invitation was not sent",
    "action.create_room": "The room was not created",
    "action.publish_room": "The room was not published to the directory",
    "action.join_room": "You could not join the room",
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
    "help.dry_run": "--dry-run: a command shown with [--dry-run] answers what it would record and do, and changes nothing; the others only read and answer as usual.",
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
    "deny.restricted": (
        "{what}: your posting is restricted until {until} (case #{case}). You can still use your "
        "direct chat with the bot."
    ),
    "deny.rate_limited": (
        "{what}: your posting is limited to {rate} (case #{case}). Your next post is possible at {next}."
    ),
    "deny.suspended": (
        "{what}: your account's updates are suspended until {until} (case #{case}). You can still "
        "read, leave rooms and use your direct chat with the bot."
    ),
    "deny.closed": "{what}: this account has been closed (case #{case}).",
    "dm.reopened": (
        "I left our previous direct chat because someone else was invited to it or joined it: "
        "it is meant for you and me only. Use this chat to agree, to appeal or to ask for your status."
    ),
    "deny.dm_private": (
        "{what}: this is a direct chat between an account and {bot}, kept private so that the "
        "account can agree and appeal there. Nobody else can be invited to it or join it."
    ),
    "kind.warn": "warning",
    "kind.restrict": "posting restriction",
    "kind.suspend": "suspension",
    "kind.close": "closure",
    "how.lifted": "lifted",
    "how.expired": "expired",
    "sanction.permanent": "until lifted",
    "sanction.for": "for {duration}",
    "sanction.erase": "(erase requested)",
    "sanction.with_evidence": "(with evidence)",
    "sanction.not_the_bot": "The bot cannot be the target of a measure.",
    "sanction.not_a_moderator": "{user} is a moderator; moderators cannot be the target of a measure.",
    "sanction.no_such_case": "There is no case #{case}.",
    "sanction.warning_not_liftable": "Case #{case} is a warning: there is nothing in force to lift.",
    "sanction.already_ended": "Case #{case} is no longer in force.",
    "sanction.no_such_code": "No pending closure has the code {code} (it may have expired or been used). Send !close again.",
    "sanction.evidence_unavailable": "I could not read the message this command replies to, so nothing was done. Try again, or give the command without replying.",
    "dry_run.would": "Dry run of {command}: nothing was recorded, sent or changed. Without --dry-run it would:\n{steps}",
    "dry_run.step": "• {step}",
    "dry_run.read_only": "(--dry-run: {command} only reads, so this is its usual answer; nothing was changed.)",
    "dry.nothing": "change nothing: {why}",
    "dry.case_open": "record a new case: {summary}; reason: {reason}",
    "dry.until": "until {time}",
    "dry.effect_restrict": "hold back {user}'s posts {until} (the gate refuses them; where the gate cannot see, a power-level mute)",
    "dry.effect_suspend": "suspend {user}'s updates {until}: no posts in the account's public channels",
    "dry.admin_suspend": "suspend the account on the homeserver too, if an admin token is configured",
    "dry.notice": "tell {user} in the direct chat, with the reason and how to appeal",
    "dry.tell": "tell {user} in the direct chat",
    "dry.announce": "post the case in the management room",
    "dry.ladder": "check the escalation ladder, which may add a further measure",
    "dry.report_link": "mark report #{report} as actioned by this case and tell its reporters",
    "dry.report_link_later": "once the closure is confirmed, mark report #{report} as actioned by it and tell its reporters",
    "dry.closure_request": "record a closure request: {summary}; reason: {reason}; its code must be confirmed with !confirm within {minutes} minutes",
    "dry.close_effects": "on confirmation: record the case, tell {user} first, then deactivate the account on the homeserver (if an admin token is configured) and ban it from the protected rooms",
    "dry.erase": "erase the account's data as it is deactivated",
    "dry.code_used": "use up the code {code}",
    "dry.case_confirm": "close the account of {user}, as {requester} asked; reason: {reason}",
    "dry.case_end": "record the end of case #{case} ({kind} of {user}) as lifted; reason: {reason}",
    "dry.end_restrict": "let {user} post again where this measure held them back (unless another measure is in force)",
    "dry.end_suspend": "end the suspension of {user}'s updates, on the homeserver too unless another suspension is in force",
    "dry.end_close": "unban {user} from the protected rooms (a deactivated account stays deactivated)",
    "dry.announce_end": "post the end of the case in the management room",
    "dry.report_file": "record your report of {sender}'s message in {room} (added to the open report of that message, if there is one)",
    "dry.report_show": "show it to the moderators with a copy of the message",
    "dry.report_dismiss": "mark report #{report} as dismissed; reason: {reason}",
    "dry.tell_reporters": "tell its reporters the outcome (never who decided)",
    "dry.appeal_file": "record your appeal of case #{case}",
    "dry.appeal_show": "show it to the moderators, who decide it with !grant or !deny",
    "dry.appeal_decide": "record appeal #{appeal} (case #{case}) as {decision}; reason: {reason}",
    "dry.decision_granted": "granted",
    "dry.decision_denied": "denied",
    "dry.export_file": "upload {file} here: {rows} {kind} row(s), CSV in UTF-8",
    "dry.export_audit": "record the export in the audit log",
    "dry.apply": "record your application: {summary}",
    "dry.apply_show": "show it to the moderators for review",
    "dry.approve": "approve application #{application} and record filing {filing} for {user}: {summary}",
    "dry.reject": "reject application #{application}; reason: {reason}",
    "dry.revoke": "revoke the public account of {user} (filings {filings}); reason: {reason}",
    "dry.relabel": "relabel the channels of {user}'s public account",
    "dry.channel_add": "make {room} a channel of your public account",
    "dry.channel_remove": "remove {room} from the channels of your public account",
    "dry.reload": "put the rules file's {news} news rule(s) and {sources} repost source(s) in force, in place of the current {old_news} and {old_sources}",
    "dry.reload_unread": "re-read the news rules file and put it in force",
    "dry.agree": "record your acceptance of agreement version {version}",
    "dry.agree_effects": "let you post, invite and create rooms, and lift the agreement's mutes in protected rooms",
    "dry.rules": "send the service agreement (version {version}) in this chat; a ✅ reaction to it accepts it",
    "sanction.imposed": "Case #{case}: {summary}. Recorded and in effect; the account has been told.",
    "sanction.close_confirm": "To {summary}, send !confirm {code} within 2 minutes. Reason: {reason}",
    "sanction.lifted": "Case #{case} ({user}) lifted; the account has been told.",
    "sanction.ended_expired": "Case #{case}: your {kind} has ended.",
    "sanction.ended_lifted": "Case #{case}: your {kind} was lifted. Reason: {reason}",
    "sanction.announce_end": "Case #{case} ({kind} of {user}) {how} by {actor}: {reason}",
    "sanction.admin_failed": "Case #{case}: the homeserver's admin API refused the measure ({error}); the bot's own enforcement is in effect.",
    "effect.failed": (
        "Could not {what} for {target} ({cause}): {error}. This will not be retried; "
        "if it is still needed, do it by hand."
    ),
    "effect.kind.notice": "send a reply",
    "effect.kind.dm": "send a notice in the direct chat",
    "effect.kind.management": "post to the management room",
    "effect.kind.redact": "redact a message",
    "effect.kind.mute": "mute (lower the power level)",
    "effect.kind.unmute": "unmute (restore the power level)",
    "effect.kind.ban": "ban from a room",
    "effect.kind.unban": "unban in a room",
    "effect.kind.admin": "make the admin API call (suspend, unsuspend or deactivate)",
    "effect.kind.state": "set a room state event",
    "effect.kind.file": "send an export file",
    "effect.kind.topic_tag": "put the label's tag in a channel's topic",
    "effect.kind.agreement_prompt": "send the agreement",
    "effect.kind.unlist": "take a room out of the room directory",
    "effect.kind.room_admin": "make the bot a room's admin and join it",
    "effect.kind.alias_delete": "remove a room address from the directory",
    "ladder.reason": "escalation ladder: {count} {kind} cases ({cases})",
    "ladder.propose_close": (
        "The escalation ladder proposes closing {user} (cases {cases}). A moderator confirms with "
        "!confirm {code} before {until}; otherwise nothing happens."
    ),
    "notice.warn": "Case #{case}: you have received a warning.",
    "notice.restrict": "Case #{case}: your posting is restricted until {until}.",
    "notice.restrict_rate": "Case #{case}: your posting is limited to {rate} until {until}.",
    "notice.suspend": "Case #{case}: your account's updates are suspended until {until}. You can still read and leave rooms.",
    "notice.close": "Case #{case}: your account is being closed.",
    "notice.reason": "Reason: {reason}",
    "notice.appeal": "If you think this is wrong, appeal here with !appeal {case} <your reasons>.",
    "case.line": "Case #{case}: {kind} of {user}, by {actor} at {time}",
    "case.reason": "  reason: {reason}",
    "case.until": "  until: {until}",
    "case.rate": "at most {rate}",
    "case.caused_by": "  caused by: {cases}",
    "case.evidence": "  evidence: {sender}: {body}",
    "case.ended": "  {how} at {time} by {actor}: {reason}",
    "case.in_force": "  in force",
    "cases.none": "No cases.",
    "cases.header_active": "Measures in force ({count}):",
    "cases.header_recent": "Latest cases ({count}):",
    "cases.line": "#{case} {kind} — {user} — {time} — {reason}",
    "history.none": "{user} has no cases.",
    "history.header": "{count} case(s) for {user}:",
    "cmd.warn.summary": "warn an account (reply to a message to attach it as evidence)",
    "cmd.restrict.summary": "restrict an account's posting; --rate N/PERIOD allows N posts per period",
    "cmd.suspend.summary": "suspend an account's updates: nothing but reading, leaving and the DM with me",
    "cmd.close.summary": "close an account (asks for !confirm; --erase also erases it)",
    "cmd.confirm.summary": "confirm a pending closure",
    "cmd.lift.summary": "end a measure early",
    "cmd.case.summary": "show one case",
    "cmd.history.summary": "show an account's cases",
    "cmd.cases.summary": "list the latest cases, or the measures in force",
    "cmd.wrong_place": "{command} works only in the management room or in your direct chat with me.",
    "report.how": "To report a message, reply to it with !report <reason>, or send !report <matrix.to link to the message> <reason>.",
    "report.cannot_see": "I cannot see that message (I may not be in its room). Copy its link (Share → Copy link) into !report, or ask a moderator.",
    "report.thanks": "Thank you. Your report #{report} has reached the moderators; you will be told the outcome.",
    "report.line": "Report #{report}: a message by {sender} in {room} ({time})",
    "report.evidence": "  message: {body}",
    "report.no_text": "(no text)",
    "report.purged": "(purged after the retention period)",
    "report.by": "  reported by {reporter}: {reason}",
    "report.resolved": "  {how} at {time}: {reason}",
    "report.how_to_act": "  act: !resolve {report} dismiss <reason…> or !resolve {report} warn {sender} <reason…> (or restrict, suspend, close)",
    "report.merged": "Report #{report}: reported again by {reporter} ({count} reporters now): {reason}",
    "report.no_such": "There is no report #{report}.",
    "report.already_resolved": "Report #{report} has already been resolved.",
    "report.resolve_how": "Resolve report #{report} with dismiss <reason…> or with a sanction command: warn, restrict, suspend or close.",
    "report.dismissed": "Report #{report} dismissed; the reporters have been told.",
    "report.outcome_dismissed": "Your report #{report} was reviewed and no action was taken. Reason: {reason}",
    "report.outcome_actioned": "Your report #{report} was reviewed and action was taken. Thank you.",
    "resolution.dismissed": "dismissed",
    "resolution.actioned": "action taken",
    "reports.none": "No open reports.",
    "reports.header": "Open reports, oldest first ({count}):",
    "stats.text": (
        "Open reports: {open}\n"
        "Resolved in the last 30 days: {resolved} (time to resolve: median {median}, 90th percentile {p90})\n"
        "Measures in the last 30 days: {by_kind}\n"
        "Measures in force now: {in_force}"
    ),
    "appeal.not_yours": "You can appeal only a case of your own, and there is no such case #{case} of yours.",
    "appeal.not_in_force": "Case #{case} is no longer in force; there is nothing to appeal.",
    "appeal.already_open": "You already have an open appeal on case #{case}; the moderators will answer it.",
    "appeal.thanks": "Your appeal #{appeal} on case #{case} has reached the moderators; you will be told the outcome.",
    "appeal.announce": "Appeal #{appeal} on case #{case} by {user}: {text}\n  decide: !grant {appeal} <reason…> or !deny {appeal} <reason…>",
    "appeal.no_such": "There is no appeal #{appeal}.",
    "appeal.already_decided": "Appeal #{appeal} has already been decided.",
    "appeal.granted": "Appeal #{appeal} granted: case #{case} has ended and the account has been told.",
    "appeal.denied": "Appeal #{appeal} denied: case #{case} stays in force; the account has been told.",
    "appeal.outcome_granted": "Your appeal #{appeal} on case #{case} was granted; the measure has ended. Reason: {reason}",
    "appeal.outcome_denied": "Your appeal #{appeal} on case #{case} was denied. Reason: {reason}",
    "appeals.none": "No open appeals.",
    "appeals.header": "Open appeals ({count}):",
    "export.bad_date": "{date} is not a date like 2026-11-01.",
    "export.done": "Exported {rows} {kind} row(s) as {file} (CSV, UTF-8). The export is recorded in the audit log.",
    "cmd.report.summary": "report a message to the moderators (reply to it, or give its link)",
    "cmd.appeal.summary": "appeal a measure taken against your account",
    "cmd.reports.summary": "list open reports, oldest first",
    "cmd.resolve.summary": "resolve a report: dismiss, or a sanction command (the case is linked)",
    "cmd.stats.summary": "reports and measures in numbers",
    "cmd.appeals.summary": "list open appeals",
    "cmd.grant.summary": "grant an appeal (ends the case)",
    "cmd.deny.summary": "deny an appeal",
    "cmd.export.summary": "upload an export of the records here (CSV)",
    "deny.not_public_account": (
        "{what}: only approved public accounts may publish rooms to the directory. Apply with "
        "!apply public <category> <name> in your direct chat with {bot}."
    ),
    "deny.news_tier_missing": (
        "{what}: it reads as current-affairs news (rule {rule}), and posting it here needs the news "
        "{tier} authorisation, which this account does not have. Public accounts apply with "
        "!apply news {tier} <licence-number> in their direct chat with {bot}."
    ),
    "deny.encryption_in_scope": (
        "{what}: this room is public (or a channel or protected room), where the news rules apply, and "
        "encrypted messages cannot be checked. Only accounts with the news publisher authorisation may "
        "use encryption here. Talk without encryption here, or use encryption in a private room or a "
        "direct chat; public accounts apply with !apply news publisher <licence-number> in their direct "
        "chat with {bot}."
    ),
    "rules.reloaded": "Rules reloaded: {news} news rule(s), {sources} repost source(s).",
    "rules.invalid": "The rules file was not loaded, and the previous rules stay in force: {error}",
    "cmd.reload.summary": "re-read the news rules file (public_accounts.rules_file)",
    "account.unknown_category": "Unknown category {category}. Choose one of: {categories}.",
    "account.apply_usage": "Apply with !apply public <category> <name…> or !apply news publisher|reposter <licence number>.",
    "account.already_public": "You already have a public account ({name}, filing {filing}).",
    "account.needs_public": "A news authorisation is for public accounts: apply with !apply public <category> <name…> first.",
    "account.already_tier": "Your public account already has the {tier} tier.",
    "account.pending": "You already have a {kind} application waiting for review.",
    "account.applied": "Application #{application} received; the moderators will review it and you will be told the outcome here.",
    "account.announce": "Application #{application} by {user}: {summary}\n  decide: !approve {application} [note…] or !reject {application} <reason…>",
    "account.summary_public": "public account, category {category}, name {name}",
    "account.summary_news": "news tier {tier}, licence {licence}",
    "account.no_application": "You have not applied for anything yet. !apply public <category> <name…> starts.",
    "account.application_line": "#{application} {summary}: {status}",
    "account.status_pending": "waiting for review",
    "account.status_approved": "approved",
    "account.status_rejected": "rejected ({note})",
    "account.no_such": "There is no application #{application}.",
    "account.already_decided": "Application #{application} has already been decided.",
    "account.approved": "Application #{application} approved: filing {filing} for {user}.",
    "account.rejected": "Application #{application} rejected; the applicant has been told.",
    "account.told_approved": "Your application #{application} was approved. Filing number: {filing}. {note}",
    "account.told_rejected": "Your application #{application} was rejected. Reason: {reason}",
    "account.not_public": "{user} has no public account.",
    "account.revoked": "The public account of {user} has been revoked (filings {filings}); the account has been told.",
    "account.told_revoked": "Your public account has been revoked (filings {filings}). Reason: {reason}",
    "account.none_pending": "No applications are waiting for review.",
    "account.pending_header": "Applications waiting for review, oldest first ({count}):",
    "channel.added": "{room} is now a channel of your public account.",
    "channel.removed": "{room} is no longer a channel of your public account.",
    "channel.not_yours": "{room} is not one of your channels.",
    "channel.usage": "Use !channel add <room> or !channel remove <room>.",
    "channel.unknown_room": "I cannot find the room {room}. Give its ID (!…:server) or an alias that exists.",
    "channel.management": "{room} is the moderators' management room; it cannot be a channel.",
    "channel.protected": "{room} is a room this bot protects for the whole server; it cannot be one account's channel.",
    "channel.taken": "{room} is already the channel of another public account. Only that account can remove it (with !channel remove {room}).",
    "channel.bot_not_in_room": "I am not in {room}, so I can neither check nor label it. Invite me ({bot}) to the room, then send the command again.",
    "channel.not_member": "You are not a member of {room}. Only a member with the power to change the room's settings can make it a channel.",
    "channel.no_power": "Your power level in {room} is {level}; changing the room's settings needs {needed}. Ask a room admin to raise your level, then send the command again.",
    "channel.not_public": "{room} is not public (its join rule is \"{rule}\" and it is not in the room directory). A channel is a room anyone can join or find: make the room public or publish it, then send the command again.",
    "whois.public": "{user}: public account \"{name}\", category {category}, filing {filing}.",
    "whois.tier": "News authorisation: {tier} (filing {filing}).",
    "whois.no_tier": "No news authorisation.",
    "whois.channels": "Channels: {channels}",
    "whois.none": "{user} is not a public account.",
    "tier.publisher": "publisher",
    "tier.reposter": "reposter",
    "cmd.apply.summary": "apply for a public account, or a news authorisation for yours",
    "cmd.application.summary": "where your applications stand",
    "cmd.applications.summary": "applications waiting for review",
    "cmd.approve.summary": "approve an application (gives a filing number)",
    "cmd.reject.summary": "reject an application",
    "cmd.revoke.summary": "revoke an account's public account and news tier",
    "cmd.channel.summary": "add or remove a channel of your public account",
    "cmd.whois.summary": "what the register says about an account (public facts only)",
    "label.publisher": "[News publisher]",
    "label.reposter": "[News reposter]",
    "time.never": "never",
    "action.redaction_reason": (
        "Your deletion was not made, because it gives a reason, which clients show in place of the "
        "message. You may still delete your own messages without a reason"
    ),
    "action.member_event": "Your display name or membership reason was removed from this room",
    "deny.private_news": (
        "{what}: this room's history holds current-affairs news (rule {rule}) posted while it was "
        "private by an account without the news authorisation; opening it (a public or restricted join "
        "rule, world-readable history, the directory) would show that news to everyone who joins. Open "
        "a new room instead, or ask a moderator."
    ),
    "channel.publication_refused_mgmt": (
        "{user} published {room} to the directory, but it was not made their channel: {why}"
    ),
    "action.room_text": "The name, topic or address you gave your new room was cleared",
    "directory.text_cleared": "About your new room {room}: {why}",
    "directory.text_cleared_mgmt": (
        "The initial {fields} of {room}, created by {user}, was refused; the bot cleared it and told "
        "{user}: {why}"
    ),
    "directory.text_kept_mgmt": (
        "The initial {fields} of {room}, created by {user}, is refused but the bot could not clear it "
        "({error}); please clear it by hand or close the room. The reason: {why}"
    ),
    "field.m.room.name": "name",
    "field.m.room.topic": "topic",
    "field.m.room.canonical_alias": "address",
    # --- consent at registration (bot.consent) ---
    "consent.page.heading": "Service agreement, version {version}",
    "consent.page.already": "You have accepted this version of the agreement.",
    "consent.page.agree": "I accept the agreement",
    "consent.page.thanks_title": "Thank you",
    "consent.page.thanks": "Thank you. Your acceptance of the service agreement was recorded.",
    "consent.mismatch": (
        "The homeserver asks new accounts to accept agreement version {synapse} (user_consent.version), "
        "but the bot's agreement is version {version}: accounts that accept at registration are still asked "
        "in chat. Regenerate the policy pages (python -m bot consent-templates) and set user_consent.version "
        "to {version}."
    ),
    "consent.text_mismatch": (
        "The homeserver asks new accounts to accept agreement version {version}, but its policy page "
        "(/_matrix/consent) does not show the bot's agreement text: accounts that accept at registration are "
        "still asked in chat. Regenerate the policy pages (python -m bot consent-templates)."
    ),
    # --- identity (issue 9) ---
    "deny.not_verified": "{what}: this needs a verified real identity, and this account is not verified. {how}",
    "action.public_account": "Your public-account application was not accepted",
    "action.news": "Your news-tier application was not accepted",
    # issue 9 review: a channel of a public account whose owner is no longer verified
    "action.channel": "This room cannot become your channel",
    "identity.how.intro": "How to verify your real identity on this server (your display name stays your own choice):",
    "identity.how.sso": "- log in with {providers}: the account is verified by that sign-in;",
    "identity.how.service": "- verify with the operator's identity service{url}; the server learns only that you were verified;",
    "identity.how.manual": "- or ask a moderator in your direct chat with {bot} for a manual check (!verify alone repeats this).",
    "identity.blacklisted_notice": (
        "Identity blacklist: {user} was just verified ({verifier}, {method}) with an identity that is on the "
        "blacklist (case #{case}). The verification was refused; the account is not verified."
    ),
    # --- end identity ---
    # --- identity in chat (issue 9): !verify, !unverify, !status, !whois, !history, !close --blacklist ---
    "cmd.verify.summary": "how to verify your real identity here (moderators: !verify <user> <method> <note…> records a manual check)",
    "cmd.unverify.summary": "revoke an account's real-name verification",
    "identity.verifier.assertion": "identity service",
    "identity.verifier.sso": "single sign-on",
    "identity.verifier.manual": "manual check",
    "identity.verify_usage": "Usage: !verify alone says how to verify; moderators record a manual check with !verify <user> <method> <note…> [--level LEVEL] (say what was checked, never the person's ID number), and !verify <user> asks single sign-on again after a revocation.",
    "cmd.forbidden_args": "{command} with arguments is for moderators only; {command} alone is open to everyone.",
    "identity.you_are_verified": "Your real identity is verified ({verifier}, method {method}, level {level}, since {time}). Other users never see it; your display name stays your own.",
    "identity.you_are_not_verified": "Your real identity is not verified yet.",
    "identity.sso_verified": "Your sign-in with {method} verifies you: recorded now (level {level}).",
    "identity.sso_revoked": "Your single sign-on verification has ended: your account is no longer linked to that sign-in.",
    "identity.sso_unavailable": "I could not ask the homeserver about your sign-in just now; please try again later.",
    "identity.self_refused.blacklisted": "Your sign-in cannot verify this account: that identity is on the blacklist after an account closure. The moderators have been told.",
    "identity.self_refused.too_many_accounts": "Your sign-in cannot verify this account: that identity already verifies as many accounts as this server allows.",
    "identity.unknown_user": "{user} is not an account of this homeserver that I know of, so it cannot be verified here.",
    "identity.admin_unavailable": "I could not ask the homeserver whether {user} exists just now; nothing was recorded. Try again later.",
    "identity.already_verified": "{user} is already verified ({verifier}, method {method}, level {level}, since {time}). Nothing was recorded; send !unverify first to replace it.",
    "identity.refused.blacklisted": "{user} cannot be verified: that identity is on the blacklist after an account closure.",
    "identity.refused.too_many_accounts": "{user} cannot be verified: that identity already verifies as many accounts as this server allows (identity.accounts_per_subject).",
    "identity.refused.unknown_user": "{user} is not an account of this homeserver, so it cannot be verified here.",
    "identity.refused.other": "{user} cannot be verified ({code}). Nothing was recorded.",
    "identity.verified": "{user} is now verified: manual check, method {method}, level {level}, recorded at {time}.",
    "identity.not_verified": "{user} is not verified: there is nothing to revoke.",
    "identity.unverified": "{user} is no longer verified (the {verifier} verification was revoked). Reason: {reason}",
    "dry.verify": "record a manual verification of {user}: method {method}, level {level}; note: {note}",
    "dry.verify_self": "ask the homeserver whether your account's single sign-on verifies it (if this server verifies by sign-in), and record what changed",
    "dry.unverify": "record that {user} is no longer verified (revoking the {verifier} verification); reason: {reason}",
    "status.identity_verified": "Real identity: verified ({verifier}, level {level}, since {time}).",
    "status.identity_unverified": "Real identity: not verified. !verify says how.",
    "whois.verified": "Real identity: verified.",
    "whois.not_verified": "Real identity: not verified.",
    "history.identity_header": "{count} record(s) for {user}, oldest first:",
    "history.identity_verified": "{time} real identity verified: {verifier}, method {method}, level {level}, by {actor}{note}",
    "history.identity_revoked": "{time} real-identity verification revoked by {actor}; reason: {reason}",
    "history.identity_note": "; note: {note}",
    "sanction.blacklist": "(blacklist requested)",
    "sanction.blacklist_pending": "Once confirmed, the identity {user} was verified with goes on the identity blacklist.",
    "sanction.blacklist_nothing": "{user} has no verification that names an identity (verified manually, or not at all): the closure will blacklist nobody.",
    "sanction.blacklisted": "The identity {user} was verified with is now on the identity blacklist: any account verified with it later is refused, and you will be told.",
    "sanction.blacklist_none": "{user} has no verification that names an identity (verified manually, or not at all): nothing was blacklisted; the account is closed all the same.",
    "dry.blacklist": "on confirmation: put the identity {user} was verified with on the identity blacklist",
    "dry.blacklist_nothing": "blacklist nobody: {user} has no verification that names an identity (manual or none); the closure goes ahead",
    "account.approve_unverified": "Application #{application} cannot be approved: {user} has no verified real identity, which this server requires (identity.required_for: {purpose}). Nothing was recorded; they can learn how with !verify.",
    # --- end identity in chat ---
    # --- review 9 (identity fixes #3, #9, #12, #15) ---
    "identity.blacklist_revoked": "identity blacklisted with the closure of case #{case}",
    "sanction.blacklist_siblings": "The same identity also verified {users}: their verifications were revoked (a moderator's !verify <user> re-checks one later).",
    "sanction.blacklist_lifted": "Case #{case} was lifted, and with it the identity blacklist entries it made for {users}: those identities may verify accounts again. Accounts whose verification the blacklist revoked stay unverified until a moderator re-checks them with !verify <user>.",
    "identity.self_refused.held": "Your sign-in does not verify this account again: a moderator revoked its verification. Ask a moderator in your direct chat with the bot to review it.",
    "identity.unverified_held": "Its single sign-on will not verify it again until a moderator sends !verify {user}.",
    "identity.recheck_verified": "{user} is verified again by single sign-on (method {method}, level {level}); the earlier revocation no longer holds.",
    "identity.recheck_nothing": "{user} has no sign-in with a configured provider (identity.sso_providers) that could verify it; nothing was recorded. Record a manual check with !verify <user> <method> <note…>.",
    "identity.recheck_no_sso": "This server does not verify by single sign-on (identity.sso_providers, or no admin token), so there is nothing to ask again for {user}. Record a manual check with !verify <user> <method> <note…>.",
    "identity.recheck_ended": "{user}'s single sign-on verification has ended: the account is no longer linked to that sign-in.",
    "identity.holds_a_number": "Nothing was recorded: the {field} holds a run of digits that looks like an ID, passport or phone number. Never type a person's identity into chat: the note is kept in clear in the history, the audit log and every export. Describe what you checked instead (e.g. \"ID card seen in person\"), and write dates with separators (2026-11-29).",
    "identity.field.note": "note",
    "identity.field.method": "method",
    "identity.field.level": "level",
    "identity.field.reason": "reason",
    "dry.verify_recheck": "ask the homeserver whether {user}'s single sign-on verifies it, even after a moderator's revocation, and record what changed",
    "dry.blacklist_lift": "lift the identity blacklist entries case #{case} made for {users} (audited): those identities may verify again",
    # --- end review 9 identity fixes ---
    # -- bot.synapse (the in-process module) --
    "synapse.unavailable": (
        "{what}: the rules service of this server cannot decide right now (it has not heard from "
        "the rules bot for too long). Try again in a few minutes."
    ),
}
