"""简体中文消息目录。键与 {占位符} 必须与 en.py 一致（有单元测试检查）。"""

MESSAGES: dict[str, str] = {
    "action.send_event": "您的消息未能发送",
    "action.invite": "您的邀请未能发送",
    "action.create_room": "房间未能创建",
    "action.publish_room": "房间未能发布到目录",
    "deny.not_agreed": (
        "{what}：您尚未同意服务协议（版本 {version}）。"
        "请打开与 {bot} 的私聊，发送 !agree 或 !同意（也可以对协议消息回应 ✅）。"
    ),
    "deny.agreement_outdated": (
        "{what}：服务协议已更新（当前版本 {version}），您尚未同意新版本。"
        "请打开与 {bot} 的私聊，发送 !agree 或 !同意（也可以对协议消息回应 ✅）。"
    ),
    "agreement.intro": "欢迎！在发言、邀请他人、创建或发布房间之前，请阅读并同意服务协议（版本 {version}）：",
    "agreement.how_to_accept": (
        "同意请在此发送 !同意（或 !agree），或对本消息回应 ✅。在同意之前，您可以阅读、加入房间，"
        "并在本私聊中与我对话。发送 !帮助 查看我能做什么。"
    ),
    "agreement.operator": "服务提供者：{name}。许可证号：{licence}。",
    "agree.confirmed": "谢谢！已于 {time} 记录您对协议版本 {version} 的同意。现在您可以正常使用全部功能。",
    "agree.already": "您已于 {time} 同意协议版本 {version}，无需再次操作。",
    "agree.exempt": "您是{role}，协议门槛不适用于您。",
    "agree.stale_reaction": "该消息是旧版本的协议。请对当前版本（版本 {version}）的协议消息回应 ✅，或发送 !同意。",
    "role.moderator": "管理员",
    "role.bot": "本服务的机器人",
    "status.agreed": "服务协议：已于 {time} 同意版本 {version}。",
    "status.outdated": "服务协议：您同意的是版本 {old}，当前版本为 {version}。请发送 !同意 以同意新版本。",
    "status.not_agreed": "服务协议：尚未同意（当前版本 {version}）。请发送 !同意 以同意。",
    "status.exempt": "身份：{role}。协议门槛不适用于您。",
    "status.muted": "在您同意协议之前，您在 {count} 个受保护房间中暂时不能发言。",
    "help.header": "您可以使用以下命令：",
    "help.line": "{usage} — {summary}",
    "help.footer": "每个命令都有英文名称，例如 !agree 与 !同意 相同。",
    "cmd.agree.summary": "同意当前的服务协议",
    "cmd.rules.summary": "再次显示服务协议",
    "cmd.status.summary": "显示您的账号状态",
    "cmd.help.summary": "显示本列表",
    "cmd.unknown": "我不认识命令 {command}。发送 !帮助 查看命令列表。",
    "cmd.usage": "用法：{usage}",
    "cmd.forbidden": "{command} 仅限管理员使用。",
    "cmd.failed": "处理 {command} 时出错，已记录日志，请稍后再试。",
    "roommode.redacted": (
        "您在 {room} 发送的消息已被移除，因为您尚未同意服务协议（版本 {version}）。"
        "请在此发送 !同意；同意后即可恢复发言。"
    ),
    "time.never": "从未",
}
