//! The pinned CronJobs' requests behind the service: what a node gets, and what its reports
//! of runs it started while cut off make.

use super::super::tests::{call, json, service};
use super::super::*;
use shoal_transport::proto::ErrorCode;

/// A node gets the CronJobs pinned to it and no other, and its reports of runs it started
/// while cut off make their Job and pod once: for CronJobs pinned to it, at times of their
/// schedule, with a pod the controller builds; a Job the controller made for the same time
/// meanwhile takes the node's pod, and its own pod that never started goes.
#[tokio::test]
async fn a_node_reports_only_runs_of_its_pinned_cronjobs_and_each_makes_one_job() {
    let (_dir, s) = service().await;
    let admin = Identity::Admin("admin".into());
    let cronjob = |name: &str, node: &str| {
        json(
            serde_json::json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "nodeName": node, "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "x"}]}}}}}}),
        )
    };
    let objects = vec![cronjob("mine", "pi-1"), cronjob("theirs", "pi-2")];
    call(&s, &admin, Request::Apply { objects }).await.unwrap();
    let me = Identity::Node("pi-1".into());
    let Ok(Response::Json(pinned)) = call(&s, &me, Request::PinnedCronJobs).await else {
        panic!("pinned CronJobs");
    };
    let pinned: Vec<shoal_api::PinnedCronJob> = serde_json::from_slice(&pinned).unwrap();
    assert_eq!(pinned.len(), 1);
    let cj = pinned[0].cronjob.clone();
    assert_eq!(cj.metadata.name, "mine");
    assert_eq!(pinned[0].times[0].step, 60);

    let now = chrono::Utc::now().timestamp();
    let minute = now - now.rem_euclid(60);
    let at = chrono::DateTime::from_timestamp(minute, 0).unwrap();
    let run = |cj: &shoal_api::CronJob, scheduled: i64, name: &str, uid: &str| {
        let mut pod = cj.job_for(at).new_pod();
        pod.metadata.name = name.into();
        pod.metadata.uid = uid.into();
        pod.spec.node_name = Some("pi-1".into());
        pod.spec.containers[0].image = "what the node would rather run".into();
        pod.status = Some(shoal_api::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let report = shoal_api::CronRunReport {
            namespace: "default".into(),
            cronjob: cj.metadata.name.clone(),
            cronjob_uid: cj.metadata.uid.clone(),
            scheduled,
            pod,
            replaced: Vec::new(),
        };
        Request::ReportCronRun {
            report: serde_json::to_vec(&report).unwrap(),
        }
    };
    let job = format!("mine-{}", minute / 60);
    let uid = "0123abcd-0000-4000-8000-000000000001";
    let pod_name = format!("{job}-abcde");
    let Ok(Response::Object(stored)) = call(&s, &me, run(&cj, minute, &pod_name, uid)).await else {
        panic!("the run is reported");
    };
    let stored: Pod = Object::from_json(&stored).unwrap().into_typed().unwrap();
    assert_eq!(stored.metadata.uid, uid, "the uid it runs under");
    assert_eq!(
        stored.spec.containers[0].image, "x",
        "built from the template"
    );
    assert_eq!(stored.phase(), Some(shoal_api::PodPhase::Succeeded));
    let job_key = ObjectKey::new(Kind::Job, Some("default"), &job);
    let made = s.store.get(&job_key).await.unwrap().expect("its Job");
    assert_eq!(stored.metadata.owner_references[0].uid, made.metadata().uid);
    assert_eq!(
        made.metadata()
            .annotations
            .get(shoal_api::RUN_BY_NODE_ANNOTATION),
        Some(&"pi-1".to_string())
    );
    // Again (the answer was lost): the same pod, nothing new.
    assert!(matches!(
        call(&s, &me, run(&cj, minute, &pod_name, uid)).await,
        Ok(Response::Object(_))
    ));
    let cj_now = s
        .store
        .get(&ObjectKey::new(Kind::CronJob, Some("default"), "mine"))
        .await
        .unwrap()
        .unwrap()
        .into_typed::<shoal_api::CronJob>()
        .unwrap();
    assert_eq!(
        cj_now.status.and_then(|st| st.last_schedule_time),
        Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );

    let other = Identity::Node("pi-2".into());
    let uid2 = "0123abcd-0000-4000-8000-000000000002";
    let cases = vec![
        (
            "a run of a CronJob pinned elsewhere",
            call(&s, &other, run(&cj, minute, &format!("{job}-bbbbb"), uid2)).await,
            ErrorCode::Forbidden,
        ),
        (
            "a time the schedule does not have",
            call(
                &s,
                &me,
                run(&cj, minute + 30, &format!("{job}-bbbbb"), uid2),
            )
            .await,
            ErrorCode::BadRequest,
        ),
        (
            "a time ahead",
            call(
                &s,
                &me,
                run(&cj, minute + 600, &format!("{job}-bbbbb"), uid2),
            )
            .await,
            ErrorCode::BadRequest,
        ),
        (
            "a pod named as another Job's",
            call(&s, &me, run(&cj, minute, "mine-1-bbbbb", uid2)).await,
            ErrorCode::BadRequest,
        ),
        (
            "another pod's uid",
            call(&s, &me, run(&cj, minute, &format!("{job}-bbbbb"), uid)).await,
            ErrorCode::AlreadyExists,
        ),
        (
            "an admin",
            call(&s, &admin, run(&cj, minute, &format!("{job}-bbbbb"), uid2)).await,
            ErrorCode::BadRequest,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got.err(), Some(want), "{what}");
    }

    // The controller made this minute's Job of another CronJob before it saw the node gone;
    // its pod never started. The node's run joins that Job, and the unstarted pod goes.
    let objects = vec![cronjob("also", "pi-1")];
    call(&s, &admin, Request::Apply { objects }).await.unwrap();
    let also = s
        .store
        .get(&ObjectKey::new(Kind::CronJob, Some("default"), "also"))
        .await
        .unwrap()
        .unwrap()
        .into_typed::<shoal_api::CronJob>()
        .unwrap();
    let made = s
        .store
        .create(Object::Job(also.job_for(at)))
        .await
        .unwrap()
        .object
        .into_typed::<shoal_api::Job>()
        .unwrap();
    let mut pending = made.new_pod();
    pending.metadata.name = format!("{}-zzzzz", made.metadata.name);
    pending.spec.node_name = Some("pi-1".into());
    s.store.create(Object::Pod(pending)).await.unwrap();
    let name = format!("{}-ccccc", made.metadata.name);
    let adopted = call(&s, &me, run(&also, minute, &name, uid2)).await;
    let Ok(Response::Object(adopted)) = adopted else {
        panic!("adopted: {adopted:?}");
    };
    let adopted: Pod = Object::from_json(&adopted).unwrap().into_typed().unwrap();
    assert_eq!(adopted.metadata.owner_references[0].uid, made.metadata.uid);
    let pods: Vec<Pod> = s.store.list_typed(Kind::Pod, None).await.unwrap();
    let of_job: Vec<&str> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .any(|o| o.uid == made.metadata.uid)
        })
        .map(|p| p.metadata.name.as_str())
        .collect();
    assert_eq!(of_job, [name.as_str()]);
}
