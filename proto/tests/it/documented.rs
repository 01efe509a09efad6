//! Every message, field, enum, enum value, service and method of the .proto files
//! carries a comment, and every enum's zero value is its documented
//! `*_UNSPECIFIED` (or `*_NONE`) default.

use prost_types::source_code_info::Location;

const PROTOS: &[&str] = &[
    "netverdict/v1/flow.proto",
    "netverdict/v1/ingest.proto",
    "netverdict/v1/observer.proto",
    "netverdict/v1/query.proto",
];

fn documented(loc: Option<&Location>) -> bool {
    loc.is_some_and(|l| {
        l.leading_comments
            .as_deref()
            .is_some_and(|c| !c.trim().is_empty())
            || l.trailing_comments
                .as_deref()
                .is_some_and(|c| !c.trim().is_empty())
    })
}

#[test]
fn every_proto_element_is_documented() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let mut compiler = protox::Compiler::new([dir]).unwrap();
    compiler.include_source_info(true);
    compiler.open_files(PROTOS).unwrap();
    let set = compiler.file_descriptor_set();
    let mut missing = Vec::new();
    for file in set.file.iter().filter(|f| PROTOS.contains(&f.name())) {
        let info = file.source_code_info.as_ref().expect("source info");
        let at = |path: &[i32]| info.location.iter().find(|l| l.path == path);
        // Paths: 4 = message_type, 2 = field; 5 = enum_type, 2 = value; 6 = service, 2 = method.
        for (m, message) in file.message_type.iter().enumerate() {
            let mp = [4, m as i32];
            if !documented(at(&mp)) {
                missing.push(format!("{}: message {}", file.name(), message.name()));
            }
            for (f, field) in message.field.iter().enumerate() {
                if !documented(at(&[4, m as i32, 2, f as i32])) {
                    missing.push(format!(
                        "{}: {}.{}",
                        file.name(),
                        message.name(),
                        field.name()
                    ));
                }
            }
        }
        for (e, en) in file.enum_type.iter().enumerate() {
            if !documented(at(&[5, e as i32])) {
                missing.push(format!("{}: enum {}", file.name(), en.name()));
            }
            let zero = &en.value[0];
            assert_eq!(zero.number(), 0);
            assert!(
                zero.name().ends_with("_UNSPECIFIED") || zero.name().ends_with("_NONE"),
                "{}: zero value {} is not a documented default",
                en.name(),
                zero.name()
            );
            for (v, value) in en.value.iter().enumerate() {
                if !documented(at(&[5, e as i32, 2, v as i32])) {
                    missing.push(format!("{}: {}.{}", file.name(), en.name(), value.name()));
                }
            }
        }
        for (s, service) in file.service.iter().enumerate() {
            if !documented(at(&[6, s as i32])) {
                missing.push(format!("{}: service {}", file.name(), service.name()));
            }
            for (r, method) in service.method.iter().enumerate() {
                if !documented(at(&[6, s as i32, 2, r as i32])) {
                    missing.push(format!(
                        "{}: {}.{}",
                        file.name(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
}

#[test]
fn a_flow_survives_encoding() {
    use netverdict_proto::v1::{Flow, PolicyRef, Verdict};
    use prost::Message;
    let flow = Flow {
        id: "node-1/42".into(),
        verdict: Verdict::Denied as i32,
        denied_by: vec![PolicyRef {
            namespace: "default".into(),
            name: "default-deny".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let back = Flow::decode(flow.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, flow);
    assert_eq!(back.verdict(), Verdict::Denied);
}
