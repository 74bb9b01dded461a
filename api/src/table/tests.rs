use super::*;
use chrono::TimeZone;

#[test]
fn control_characters_reach_the_terminal_escaped() {
    assert_eq!(terminal_safe("plain text", false), "plain text");
    assert_eq!(
        terminal_safe("\x1b]0;pwned\x07red", false),
        "\\u{1b}]0;pwned\\u{7}red"
    );
    assert_eq!(terminal_safe("a\nb\x1b[2J", true), "a\nb\\u{1b}[2J");
    assert_eq!(terminal_safe("a\nb", false), "a\\nb");
    let table = render(&["NAME"], &[vec!["evil\x1b[31m".into()]]);
    assert!(!table.contains('\x1b'), "{table:?}");
}

#[test]
fn a_node_out_of_touch_says_for_how_long() {
    let now = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
    let node = |status: &str| {
        let mut n = crate::Node::default();
        n.metadata.name = "pi-7".into();
        n.status = Some(crate::NodeStatus {
            conditions: vec![crate::Condition {
                type_: "Ready".into(),
                status: status.into(),
                last_heartbeat_time: Some("2026-01-10T11:56:57Z".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        Object::Node(n)
    };
    assert_eq!(
        row(&node("Unknown"), now, false, false)[1],
        "NotReady(disconnected 3m3s)"
    );
    assert_eq!(row(&node("True"), now, false, false)[1], "Ready");
    assert_eq!(row(&node("False"), now, false, false)[1], "NotReady");
}

#[test]
fn ages_read_like_kubectl() {
    let now = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
    let ago = |secs: i64| (now - chrono::Duration::seconds(secs)).to_rfc3339();
    for (secs, want) in [
        (5, "5s"),
        (119, "119s"),
        (303, "5m3s"),
        (300, "5m"),
        (2520, "42m"),
        (12000, "3h20m"),
        (108000, "30h"),
        (277200, "3d5h"),
        (1036800, "12d"),
    ] {
        assert_eq!(age(Some(&ago(secs)), now), want, "{secs}s");
    }
    assert_eq!(age(None, now), "<unknown>");
}

#[test]
fn tables_line_up() {
    let out = render(
        &["NAME", "READY"],
        &[
            vec!["web-1".into(), "1/1".into()],
            vec!["a".into(), "0/1".into()],
        ],
    );
    assert_eq!(out, "NAME    READY\nweb-1   1/1\na       0/1\n");
}

#[test]
fn init_containers_say_how_far_they_got() {
    let status = |exit: Option<i32>, waiting: Option<&str>| ContainerStatus {
        name: "i".into(),
        state: Some(ContainerState {
            terminated: exit.map(|code| ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                ..Default::default()
            }),
            waiting: waiting.map(|r| ContainerStateWaiting {
                reason: Some(r.into()),
                message: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut p = Pod::default();
    p.spec.init_containers = vec![Container::default(), Container::default()];
    let cases = [
        (vec![status(None, None)], "Init:0/2"),
        (vec![status(Some(0), None), status(None, None)], "Init:1/2"),
        (vec![status(Some(1), None)], "Init:Error"),
        (
            vec![status(None, Some("CrashLoopBackOff"))],
            "Init:CrashLoopBackOff",
        ),
        (vec![status(None, Some("PodInitializing"))], "Init:0/2"),
    ];
    for (statuses, want) in cases {
        p.status = Some(PodStatus {
            phase: Some("Pending".into()),
            init_container_statuses: statuses,
            ..Default::default()
        });
        assert_eq!(pod_status(&p), want);
    }
}

/// A started sidecar counts as initialized and as a container (READY 2/2), and its
/// restarts show; one not started yet holds the pod at Init:0/1.
#[test]
fn sidecars_count_as_containers_once_started() {
    let running = |name: &str, restarts: i32| ContainerStatus {
        name: name.into(),
        ready: true,
        started: Some(true),
        restart_count: restarts,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut p = Pod::default();
    p.spec.init_containers = vec![Container {
        name: "proxy".into(),
        restart_policy: Some("Always".into()),
        ..Default::default()
    }];
    p.spec.containers = vec![Container {
        name: "app".into(),
        ..Default::default()
    }];
    let mut not_started = running("proxy", 0);
    not_started.started = Some(false);
    p.status = Some(PodStatus {
        phase: Some("Pending".into()),
        init_container_statuses: vec![not_started],
        ..Default::default()
    });
    assert_eq!(pod_status(&p), "Init:0/1");
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: vec![Condition::new("Initialized", true)],
        init_container_statuses: vec![running("proxy", 2)],
        container_statuses: vec![running("app", 1)],
        ..Default::default()
    });
    let row = pod_row(&p, "p".into(), "1s".into(), false);
    assert_eq!(row[1..4], ["2/2", "Running", "3"]);
}

#[test]
fn pod_status_prefers_the_waiting_reason() {
    let mut p = Pod::default();
    assert_eq!(pod_status(&p), "Pending");
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        container_statuses: vec![ContainerStatus {
            name: "c".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(pod_status(&p), "CrashLoopBackOff");
}
