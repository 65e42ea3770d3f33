//! The basic deploy flow through the binary.

use std::os::unix::fs::MetadataExt;

use crate::common::*;

#[test]
fn second_deploy_links_unchanged_files_and_switches() {
    let sb = Sandbox::new();
    sb.write("public/index.php", "<?php echo 1;");
    sb.write("lib/a.php", "<?php // a");
    let first = sb.deploy_src(&[]);
    assert_eq!(sb.current().as_deref(), Some(first.as_str()));
    let link = std::fs::read_link(sb.deploy().join("current")).unwrap();
    assert!(
        link.is_relative(),
        "current must be a relative link, got {link:?}"
    );
    let release_file = std::fs::read_to_string(sb.deploy().join("current/RELEASE")).unwrap();
    assert_eq!(release_file.trim(), first);

    sb.write("public/index.php", "<?php echo 2;");
    let second = sb.deploy_src(&[]);
    assert_ne!(first, second);
    assert_eq!(sb.current().as_deref(), Some(second.as_str()));
    let ino = |rel: &str| std::fs::metadata(sb.deploy().join(rel)).unwrap().ino();
    assert_eq!(
        ino(&format!("releases/{first}/lib/a.php")),
        ino(&format!("releases/{second}/lib/a.php")),
        "an unchanged file must be a hard link to the previous release"
    );
    assert_eq!(
        std::fs::read_to_string(
            sb.deploy()
                .join(format!("releases/{first}/public/index.php"))
        )
        .unwrap(),
        "<?php echo 1;"
    );
}
