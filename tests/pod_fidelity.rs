//! Pod spec fidelity: fields Shoal accepts do what Kubernetes documents, checked on running
//! pods that print what they got, and scheduling rules checked on where pods land.

mod kit;

use kit::{field, Cluster};
use std::time::Duration;

/// envFrom (with a prefix, keys that are not names skipped), env on top of it, `$(VAR)` in
/// env values and args, `$$`, optional references to what does not exist, and fieldRefs.
#[test]
fn a_containers_environment_is_built_as_kubernetes_builds_it() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    c.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{A: "1", B: "2", 1st: "x"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{PASSWORD: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: envy, labels: {{app: web}}}}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    args: [env, A, env, B, env, S_PASSWORD, env, GREETING, env, GONE, env, IP, env, NODE, env, APP, print, "cmd=$(A)-$(GREETING) $$(A) $(NOPE)"]
    envFrom:
    - configMapRef: {{name: cfg}}
    - prefix: S_
      secretRef: {{name: sec}}
    - configMapRef: {{name: absent, optional: true}}
    env:
    - {{name: B, value: env-wins}}
    - {{name: GREETING, value: "hi-$(A)"}}
    - {{name: GONE, valueFrom: {{secretKeyRef: {{name: sec, key: NOPE, optional: true}}}}}}
    - {{name: IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
    resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
"#
    ));
    c.wait_for("the pod done", Duration::from_secs(60), |c| {
        field(&c.pod("envy"), "status.phase") == "Succeeded"
    });
    let log = c.shoal(&["logs", "envy"]).ok();
    let ip = field(&c.pod("envy"), "status.podIP");
    for want in [
        "A=1".to_string(),
        "B=env-wins".into(),
        "S_PASSWORD=hunter2".into(),
        "GREETING=hi-1".into(),
        "GONE=<unset>".into(),
        format!("IP={ip}"),
        "NODE=node-1".into(),
        "APP=web".into(),
        "cmd=1-hi-1 $(A) $(NOPE)".into(),
    ] {
        assert!(log.lines().any(|l| l == want), "{want:?} not in\n{log}");
    }
    let described = c.shoal(&["describe", "pod", "envy"]).ok();
    assert!(
        described.contains("InvalidEnvironmentVariableNames") && described.contains("[1st]"),
        "{described}"
    );
}

/// ConfigMap and Secret volumes project the `items` asked for, at their paths, with their
/// modes (or `defaultMode`); an optional volume of an object that does not exist is empty;
/// `$(VAR)` in an OCI container's command line is expanded; an init container runs first,
/// and the pod's securityContext holds (see [`secure_pod`]),
/// and what it writes to a shared emptyDir is there for the container; a ConfigMap volume is
/// read-only, as the kubelet mounts it. Needs runc and root.
#[test]
fn runc_volume_items_paths_and_modes_are_kubernetes() {
    if kit::runc_missing("runc_volume_items_paths_and_modes_are_kubernetes") {
        return;
    }
    let (c, _leftovers) = kit::oci_cluster(65, 1, &[]);
    kit::push_busybox(&c);
    c.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {app.conf: "port=80", other: "not asked for"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {token: t0k3n}
---
apiVersion: v1
kind: Pod
metadata: {name: files}
spec:
  restartPolicy: Never
  initContainers:
  - name: init
    image: busybox:1
    command: [sh, -c, "echo from-init > /scratch/f"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  containers:
  - name: c
    image: busybox:1
    command: [sh, -c]
    args:
    - "cat /cfg/conf/app.conf; echo; ls /cfg; stat -c '%a %n' /cfg/conf/app.conf /sec/token; ls -A /none | wc -l; echo greeting=$(GREETING); cat /scratch/f; touch /cfg/x 2>&1 | grep -o 'Read-only file system'"
    env: [{name: GREETING, value: hi}]
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: sec, mountPath: /sec}
    - {name: none, mountPath: /none}
    - {name: scratch, mountPath: /scratch}
  volumes:
  - {name: scratch, emptyDir: {}}
  - name: cfg
    configMap: {name: cfg, items: [{key: app.conf, path: conf/app.conf, mode: 0600}]}
  - name: sec
    secret: {secretName: sec, defaultMode: 0400}
  - name: none
    configMap: {name: absent, optional: true}
"#,
    );
    c.wait_for("the pod done", Duration::from_secs(60), |c| {
        field(&c.pod("files"), "status.phase") == "Succeeded"
    });
    let log = c.shoal(&["logs", "files"]).ok();
    let lines: Vec<&str> = log.lines().collect();
    secure_pod(&c);
    assert_eq!(
        lines,
        [
            "port=80",
            "conf",
            "600 /cfg/conf/app.conf",
            "400 /sec/token",
            "0",
            "greeting=hi",
            "from-init",
            "Read-only file system"
        ],
        "{log}"
    );
}

/// A Pod's spec and a Deployment's selector cannot change under a running object (the field
/// is named); a pod made again under the same name shows only its own events.
#[test]
fn immutable_fields_are_refused_and_events_follow_the_object_not_its_name() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    let pod = |args: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  runtimeClassName: wasm\n  containers:\n  - name: c\n    image: {image}\n    args: [{args}]\n    resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}\n")
    };
    c.apply(&pod("sleep, \"600000\""));
    c.wait_for("the pod running", Duration::from_secs(60), |c| {
        field(&c.pod("p"), "status.phase") == "Running"
    });
    // The same manifest again is unchanged (its node, chosen by the scheduler, is kept).
    let again = c
        .controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&pod("sleep, \"600000\"")))
        .ok();
    assert!(again.contains("pod/p unchanged"), "{again}");
    let err = c
        .controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&pod("sleep, \"1\"")))
        .fails();
    assert!(
        err.contains(
            "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than"
        ),
        "{err}"
    );
    let deploy = |app: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}}}}}\n    spec: {{runtimeClassName: wasm, containers: [{{name: c, image: {image}}}]}}\n")
    };
    c.apply(&deploy("a"));
    let err = c
        .controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&deploy("b")))
        .fails();
    assert!(
        err.contains("Deployment \"d\" is invalid: spec.selector: field is immutable"),
        "{err}"
    );
    let job = |args: &str| {
        format!("apiVersion: batch/v1\nkind: Job\nmetadata: {{name: j}}\nspec:\n  parallelism: 1\n  template:\n    spec: {{runtimeClassName: wasm, restartPolicy: Never, containers: [{{name: c, image: {image}, args: [{args}]}}]}}\n")
    };
    c.apply(&job("sleep, \"600000\""));
    let err = c
        .controller
        .shoal_stdin(&["apply", "-f", "-"], Some(&job("sleep, \"1\"")))
        .fails();
    assert!(
        err.contains("Job \"j\" is invalid: spec.template: field is immutable"),
        "{err}"
    );

    // Made again under the same name: the old pod's events are not the new one's.
    let first_uid = field(&c.pod("p"), "metadata.uid");
    c.shoal(&["delete", "pod", "p"]).ok();
    c.wait_for("the pod gone", Duration::from_secs(60), |c| {
        // By the NAME column: a Job pod's random suffix may end in "p" too.
        !c.shoal(&["get", "pods", "--no-headers"])
            .stdout()
            .lines()
            .any(|l| l.split_whitespace().next() == Some("p"))
    });
    c.apply(&pod("print, again, sleep, \"600000\""));
    c.wait_for("the new pod running", Duration::from_secs(60), |c| {
        field(&c.pod("p"), "status.phase") == "Running"
            && field(&c.pod("p"), "metadata.uid") != first_uid
    });
    let events: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "events", "-o", "json"]).ok()).unwrap();
    let old_started = events["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["involvedObject"]["uid"] == first_uid.as_str())
                .count()
        })
        .unwrap_or(0);
    assert!(old_started > 0, "the first pod had events");
    // Each pod was scheduled once: the new one's description shows one Scheduled event.
    let described = c.shoal(&["describe", "pod", "p"]).ok();
    let events_part = described.split("Events:").nth(1).unwrap_or("");
    let scheduled = events_part
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("Scheduled"))
        .count();
    assert_eq!(
        scheduled, 1,
        "the deleted pod's events show on the new one:\n{described}"
    );
}

/// A Service's status follows its type: a LoadBalancer lists the nodes' addresses, and the
/// same Service made a ClusterIP has none left.
#[test]
fn a_services_status_follows_its_type() {
    let c = Cluster::start(1);
    let svc = |type_: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  type: {type_}\n  selector: {{app: web}}\n  ports: [{{port: 80}}]\n")
    };
    let ingress = |c: &Cluster| {
        let v: serde_json::Value =
            serde_json::from_str(&c.shoal(&["get", "svc", "web", "-o", "json"]).ok()).unwrap();
        v["status"]["loadBalancer"]["ingress"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };
    c.apply(&svc("LoadBalancer"));
    c.wait_for("an EXTERNAL-IP", Duration::from_secs(30), |c| {
        ingress(c) == 1
    });
    c.apply(&svc("ClusterIP"));
    c.wait_for("no EXTERNAL-IP left", Duration::from_secs(30), |c| {
        ingress(c) == 0
    });
    let table = c.shoal(&["get", "svc", "web"]).ok();
    let row = table.lines().nth(1).unwrap_or("");
    assert!(
        row.contains("ClusterIP") && row.contains("<none>"),
        "{table}"
    );
}

/// initContainers run one after another, each to success, before the containers start, and
/// share the pod's volumes with them; a failed one is restarted with back-off
/// (Init:CrashLoopBackOff), or fails the pod under restartPolicy Never (Init:Error), and the
/// containers never start.
#[test]
fn init_containers_run_in_order_to_success_before_the_containers() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    let pod = |name: &str, policy: &str, init: &str, main: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  runtimeClassName: wasm
  restartPolicy: {policy}
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
{init}
  containers:
  - name: app
    image: {image}
    args: [{main}]
    volumeMounts: [{{name: work, mountPath: /work}}]
    resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
"#
        )
    };
    let init = |name: &str, args: &str| {
        format!("  - name: {name}\n    image: {image}\n    args: [{args}]\n    volumeMounts: [{{name: work, mountPath: /work}}]\n")
    };
    let two = init("fetch", "write, /work/data, from-init") + &init("check", "cat, /work/data");
    c.apply(&pod(
        "prepared",
        "OnFailure",
        &two,
        "cat, /work/data, print, ' and main'",
    ));
    c.apply(&pod(
        "doomed",
        "Never",
        &init("fail", "exit, '3'"),
        "print, never",
    ));
    c.apply(&pod(
        "retrying",
        "Always",
        &init("fail", "exit, '1'"),
        "print, never",
    ));

    c.wait_for("prepared done", Duration::from_secs(60), |c| {
        field(&c.pod("prepared"), "status.phase") == "Succeeded"
    });
    let p = c.pod("prepared");
    for (i, name) in ["fetch", "check"].iter().enumerate() {
        let s = format!("status.initContainerStatuses.{i}");
        assert_eq!(field(&p, &format!("{s}.name")), *name, "{p}");
        assert_eq!(
            field(&p, &format!("{s}.state.terminated.exitCode")),
            "0",
            "{p}"
        );
    }
    let initialized = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    assert!(initialized, "{p}");
    assert_eq!(
        c.shoal(&["logs", "prepared", "-c", "check"]).ok(),
        "from-init"
    );
    assert_eq!(
        c.shoal(&["logs", "prepared", "-c", "app"]).ok(),
        "from-init and main\n"
    );

    c.wait_for("doomed failed", Duration::from_secs(60), |c| {
        field(&c.pod("doomed"), "status.phase") == "Failed"
    });
    let d = c.pod("doomed");
    assert_eq!(
        field(
            &d,
            "status.initContainerStatuses.0.state.terminated.exitCode"
        ),
        "3"
    );
    assert_eq!(
        field(&d, "status.containerStatuses.0.state.waiting.reason"),
        "PodInitializing",
        "the container never started: {d}"
    );
    let row = c.shoal(&["get", "pod", "doomed", "--no-headers"]).ok();
    assert!(row.contains("Init:Error"), "{row}");

    c.wait_for("retrying backs off", Duration::from_secs(60), |c| {
        c.shoal(&["get", "pod", "retrying", "--no-headers"])
            .ok()
            .contains("Init:CrashLoopBackOff")
    });
    let r = c.pod("retrying");
    assert_eq!(field(&r, "status.phase"), "Pending", "{r}");
    assert_eq!(
        field(&r, "status.containerStatuses.0.state.waiting.reason"),
        "PodInitializing"
    );
}

/// A downwardAPI volume holds the pod's own fields (all its labels as `key="value"` lines,
/// one annotation, a container's memory request in Mi) and `resourceFieldRef` puts a limit
/// in the environment (an unset CPU limit reads as the node's CPUs).
#[test]
fn downward_api_volumes_and_resource_refs_tell_a_pod_about_itself() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: self
  labels: {{app: web, tier: front}}
  annotations: {{owner: edge-team}}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    args: [cat, /info/labels, print, "", cat, /info/owner, print, "", cat, /info/mem, print, "", env, MEM_MI, env, CPUS]
    env:
    - {{name: MEM_MI, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    - {{name: CPUS, valueFrom: {{resourceFieldRef: {{resource: limits.cpu}}}}}}
    resources: {{requests: {{cpu: 10m, memory: 16Mi}}, limits: {{memory: 32Mi}}}}
    volumeMounts: [{{name: info, mountPath: /info}}]
  volumes:
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: owner, fieldRef: {{fieldPath: "metadata.annotations['owner']"}}}}
      - {{path: mem, resourceFieldRef: {{containerName: c, resource: requests.memory, divisor: 1Mi}}}}
"#
    ));
    c.wait_for("the pod done", Duration::from_secs(60), |c| {
        field(&c.pod("self"), "status.phase") == "Succeeded"
    });
    let log = c.shoal(&["logs", "self"]).ok();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        log,
        format!("app=\"web\"\ntier=\"front\"\nedge-team\n16\nMEM_MI=32\nCPUS={cpus}\n"),
        "{log}"
    );
}

/// The pod's securityContext on a runc pod: its user and groups (runAsUser, runAsGroup,
/// supplementalGroups, fsGroup) for every container, a container's own runAsUser over the
/// pod's, fsGroup owning the volumes (group-writable emptyDir, setgid so new files stay the
/// group's; projected files group-readable; a local persistent volume's too), and a safe
/// sysctl set in the pod's network.
fn secure_pod(c: &Cluster) {
    c.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: plain}
data: {f: "x"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: kept}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: secure}
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    supplementalGroups: [44]
    fsGroup: 2000
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "80"}]
  containers:
  - name: pod-user
    image: busybox:1
    command: [sh, -c, "id -u; id -g; id -G | tr ' ' '\n' | sort -n | tr '\n' ' '; echo; stat -c '%g %a' /data /cfg/f; touch /data/new && stat -c '%g' /data/new; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; stat -c '%g %a' /kept; touch /kept/new && stat -c '%g' /kept/new"]
    volumeMounts: [{name: data, mountPath: /data}, {name: cfg, mountPath: /cfg}, {name: kept, mountPath: /kept}]
  - name: own-user
    image: busybox:1
    command: [sh, -c, "id -u; id -g"]
    securityContext: {runAsUser: 1001}
  volumes:
  - {name: data, emptyDir: {}}
  - {name: cfg, configMap: {name: plain, defaultMode: 0400}}
  - {name: kept, persistentVolumeClaim: {claimName: kept}}
"#,
    );
    c.wait_for("the secure pod done", Duration::from_secs(60), |c| {
        field(&c.pod("secure"), "status.phase") == "Succeeded"
    });
    let log = c.shoal(&["logs", "secure", "-c", "pod-user"]).ok();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "1000",
            "3000",
            "44 2000 3000 ",
            "2000 2777",
            "2000 440",
            "2000",
            "80",
            "2000 2777",
            "2000"
        ],
        "{log}"
    );
    let own = c.shoal(&["logs", "secure", "-c", "own-user"]).ok();
    assert_eq!(own, "1001\n3000\n");
}

/// Required anti-affinity on the hostname: three replicas on three nodes, the fourth Pending
/// with the rule named in its PodScheduled condition (as `describe` and kubectl show it).
#[test]
fn anti_affinity_spreads_replicas_one_per_node_and_leaves_the_rest_pending_with_the_rule() {
    let c = Cluster::start(3);
    c.push_probe();
    c.apply(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 4
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      runtimeClassName: wasm
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: spread}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: probe
        image: probe:1
        args: [print, ready, sleep, "600000"]
"#,
    );
    c.wait_for(
        "three replicas Running and a fourth Pending",
        Duration::from_secs(60),
        |c| {
            let pods = c.pods("app=spread");
            let phase = |p: &&serde_json::Value| p["status"]["phase"].as_str() == Some("Running");
            pods.len() == 4 && pods.iter().filter(phase).count() == 3
        },
    );
    let pods = c.pods("app=spread");
    let mut nodes: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["node-1", "node-2", "node-3"],
        "one replica per node"
    );
    let pending = pods
        .iter()
        .find(|p| p["status"]["phase"] == "Pending")
        .expect("a Pending replica");
    let scheduled = pending["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
        .expect("PodScheduled condition");
    assert_eq!(scheduled["status"], "False");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert_eq!(
        scheduled["message"],
        "0/3 nodes available: 3 node(s) didn't match pod anti-affinity rules"
    );
    // A manifest with affinity applies without a warning about it.
    let out = c
        .controller
        .shoal_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata: {name: near}\nspec:\n  runtimeClassName: wasm\n  affinity: {nodeAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 1, preference: {matchExpressions: [{key: zone, operator: In, values: [a]}]}}]}}\n  containers: [{name: c, image: probe:1}]\n"),
        );
    assert!(out.ok().contains("pod/near created"));
    assert!(!out.stderr().contains("affinity"), "{}", out.stderr());
}

/// subPath mounts one file of a ConfigMap and one directory of an emptyDir that an init
/// container made (subPathExpr with the pod's name); a subPath that an init container turned
/// into a symlink out of the volume is refused when the next container starts, which never
/// runs: it waits in CreateContainerConfigError, as under the kubelet.
#[test]
fn runc_subpaths_mount_inside_their_volume_and_a_symlink_out_is_refused() {
    if kit::runc_missing("runc_subpaths_mount_inside_their_volume_and_a_symlink_out_is_refused") {
        return;
    }
    let (c, _leftovers) = kit::oci_cluster(67, 1, &[]);
    kit::push_busybox(&c);
    c.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: sub}
data: {app.conf: "port=80", other: "not mounted"}
---
apiVersion: v1
kind: Pod
metadata: {name: subs}
spec:
  restartPolicy: Never
  initContainers:
  - name: init
    image: busybox:1
    command: [sh, -c, "mkdir -p /all/subs && echo mine > /all/subs/f && echo theirs > /all/other"]
    volumeMounts: [{name: scratch, mountPath: /all}]
  containers:
  - name: c
    image: busybox:1
    command: [sh, -c, "cat /etc/app.conf; echo; ls /etc | grep -c '^other$'; cat /mine/f; ls /mine"]
    env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts:
    - {name: cfg, mountPath: /etc/app.conf, subPath: app.conf}
    - {name: scratch, mountPath: /mine, subPathExpr: $(POD)}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: cfg, configMap: {name: sub}}
"#,
    );
    c.wait_for("the pod done", Duration::from_secs(60), |c| {
        matches!(
            field(&c.pod("subs"), "status.phase").as_str(),
            "Succeeded" | "Failed"
        )
    });
    let log = c.shoal(&["logs", "subs"]).ok();
    assert_eq!(
        field(&c.pod("subs"), "status.phase"),
        "Succeeded",
        "{log}\n{}",
        c.pod("subs")["status"]
    );
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["port=80", "0", "mine", "f"],
        "{log}"
    );

    // The init container leaves a symlink to / where the next container's subPath is.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: escape}
spec:
  restartPolicy: Never
  initContainers:
  - name: plant
    image: busybox:1
    command: [sh, -c, "ln -s / /all/out"]
    volumeMounts: [{name: scratch, mountPath: /all}]
  containers:
  - name: c
    image: busybox:1
    command: [sh, -c, "ls /host"]
    volumeMounts: [{name: scratch, mountPath: /host, subPath: out}]
  volumes:
  - {name: scratch, emptyDir: {}}
"#,
    );
    let waiting = "status.containerStatuses.0.state.waiting";
    c.wait_for("the container refused", Duration::from_secs(60), |c| {
        field(&c.pod("escape"), &format!("{waiting}.reason")) == "CreateContainerConfigError"
    });
    let pod = c.pod("escape");
    let planted = &pod["status"]["initContainerStatuses"][0]["state"]["terminated"];
    assert_eq!(planted["exitCode"], 0, "{pod}");
    assert_eq!(field(&pod, "status.phase"), "Pending", "{pod}");
    let message = field(&pod, &format!("{waiting}.message"));
    assert!(
        message.contains("subPath \"out\"") && message.contains("leads outside the volume"),
        "{pod}"
    );
    let row = c.shoal(&["get", "pod", "escape", "--no-headers"]).ok();
    assert!(row.contains("CreateContainerConfigError"), "{row}");
    assert_eq!(c.shoal(&["logs", "escape"]).stdout(), "", "it never ran");
}

/// A projected volume: a ConfigMap's key renamed, a Secret's key, and the pod's labels, in one
/// directory; a missing optional source adds nothing.
#[test]
fn a_projected_volume_joins_configmap_secret_and_downward_files() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    c.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: proj-cfg}}
data: {{app.conf: "port=80"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: proj-sec}}
stringData: {{token: t0k3n}}
---
apiVersion: v1
kind: Pod
metadata:
  name: proj
  labels: {{app: web}}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    args: [cat, /all/conf/app.conf, print, "", cat, /all/token, print, "", cat, /all/labels]
    volumeMounts: [{{name: all, mountPath: /all}}]
  volumes:
  - name: all
    projected:
      defaultMode: 0440
      sources:
      - configMap: {{name: proj-cfg, items: [{{key: app.conf, path: conf/app.conf}}]}}
      - secret: {{name: proj-sec}}
      - downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}
      - configMap: {{name: absent, optional: true}}
"#
    ));
    c.wait_for("the pod done", Duration::from_secs(60), |c| {
        matches!(
            field(&c.pod("proj"), "status.phase").as_str(),
            "Succeeded" | "Failed"
        )
    });
    let log = c.shoal(&["logs", "proj"]).ok();
    assert_eq!(field(&c.pod("proj"), "status.phase"), "Succeeded", "{log}");
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["port=80", "t0k3n", "app=\"web\""],
        "{log}"
    );
}

/// Extended resources: the node that advertises two dongles (`--capacity`) takes the pods
/// that ask for one until both are held; the third is Pending with the resource named.
#[test]
fn extended_resources_are_scheduled_by_what_nodes_advertise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = kit::Controller::start(&dir.path().join("c"));
    let agent = |name: &str, args: &[&str]| {
        kit::Agent::with(&controller, name, &dir.path().join(name))
            .args(args)
            .start()
    };
    let agents = vec![
        agent("plain", &[]),
        agent("usb", &["--capacity", "example.com/dongle=2"]),
    ];
    let c = Cluster::adopt(controller, agents).keep(dir);
    c.wait_nodes_ready();
    let node: serde_json::Value =
        serde_json::from_str(&c.shoal(&["get", "node", "usb", "-o", "json"]).ok()).unwrap();
    assert_eq!(node["status"]["allocatable"]["example.com/dongle"], "2");
    let image = c.push_probe();
    for i in 0..3 {
        c.apply(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: d{i}, labels: {{app: dongle}}}}\nspec:\n  runtimeClassName: wasm\n  containers:\n  - name: c\n    image: {image}\n    args: [sleep, \"600000\"]\n    resources: {{limits: {{example.com/dongle: 1}}}}\n"));
    }
    c.wait_for("two pods Running", Duration::from_secs(60), |c| {
        c.pods("app=dongle")
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count()
            == 2
    });
    let pods = c.pods("app=dongle");
    for p in pods.iter().filter(|p| p["status"]["phase"] == "Running") {
        assert_eq!(p["spec"]["nodeName"], "usb");
    }
    let pending = pods
        .iter()
        .find(|p| p["status"]["phase"] == "Pending")
        .expect("a Pending pod");
    let message = pending["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
        .map(|c| c["message"].clone());
    assert_eq!(
        message,
        Some(serde_json::json!(
            "0/2 nodes available: 2 insufficient example.com/dongle"
        ))
    );
}

/// A running pod's labels change (the manifest applied again): its downwardAPI labels file
/// says so, as the kubelet rewrites it, while the container keeps running.
#[test]
fn downward_api_labels_follow_a_relabelled_pod() {
    let c = Cluster::start(1);
    let image = c.push_probe();
    let reads: Vec<String> = (0..120)
        .map(|_| "cat, /info/labels, print, \"--\", sleep, \"500\"".to_string())
        .collect();
    let manifest = |tier: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: relabel, labels: {{tier: {tier}}}}}\nspec:\n  runtimeClassName: wasm\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    args: [{}]\n    volumeMounts: [{{name: info, mountPath: /info}}]\n  volumes:\n  - name: info\n    downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}\n",
            reads.join(", ")
        )
    };
    c.apply(&manifest("front"));
    c.wait_for("the first labels read", Duration::from_secs(60), |c| {
        c.shoal(&["logs", "relabel"])
            .stdout()
            .contains("tier=\"front\"")
    });
    // Labels may change under a running pod (its spec may not).
    c.apply(&manifest("back"));
    c.wait_for("the new labels read", Duration::from_secs(30), |c| {
        c.shoal(&["logs", "relabel"])
            .stdout()
            .contains("tier=\"back\"")
    });
    assert_eq!(field(&c.pod("relabel"), "status.phase"), "Running");
}
