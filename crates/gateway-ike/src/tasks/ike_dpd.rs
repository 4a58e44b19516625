//! Dead peer detection (RFC 7296 §2.4): an empty INFORMATIONAL request
//! after `dpd_interval` without traffic from the peer; an exhausted
//! retransmission declares the peer dead and applies `dpd_action`. The
//! exchange itself carries no payloads, so the task has no state: see
//! `Task::IkeDpd` and `task_manager`.
