"""Azure Functions triggers: one blueprint per trigger, each thin (parse, call the core, return)."""
