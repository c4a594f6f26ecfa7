//! PLACEHOLDER until the nf_tables netlink client lands (branch nftcodec).

#[derive(Debug, Clone, Copy)]
pub enum Family {
    Ip,
    Ip6,
}

pub fn available() -> bool {
    false
}

pub fn delete_table(family: Family, name: &str) -> std::io::Result<()> {
    let fam = match family {
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
    };
    let out = std::process::Command::new(crate::kernel::firewall::iptables::find_program("nft"))
        .args(["delete", "table", fam, name])
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
