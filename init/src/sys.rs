//! The system calls PID 1 needs that std does not offer, each behind a safe
//! function that checks its result.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{Error, Result};
use std::os::fd::AsRawFd;
use std::path::Path;

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::other(format!("{s:?} has a NUL")))
}

fn check(rc: libc::c_int) -> Result<()> {
    if rc < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2).
pub(crate) fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) })
}

/// chroot(2).
pub(crate) fn chroot(path: &str) -> Result<()> {
    let p = cstr(path)?;
    // SAFETY: a NUL-terminated string that outlives the call.
    check(unsafe { libc::chroot(p.as_ptr()) })
}

/// finit_module(2)'s flag: the kernel decompresses the module
/// (CONFIG_MODULE_DECOMPRESS), so `.ko.xz` files load as shipped.
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

/// finit_module(2), letting the kernel decompress `.ko.xz`.
pub(crate) fn load_module(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path)?;
    let params = cstr("")?;
    // SAFETY: a valid descriptor and a NUL-terminated parameter string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            MODULE_INIT_COMPRESSED_FILE,
        )
    };
    if rc < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Power the machine off, now (everything in it is in memory).
pub(crate) fn power_off() -> ! {
    // SAFETY: no memory is passed.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot(2) returns only when not PID 1 or not permitted.
    std::process::exit(1)
}

/// Wait for any child; `None` when there is none.
pub(crate) fn wait_any() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
    (pid > 0).then_some((pid, status))
}

/// An IPv4 interface configuration through the classic ioctls: address,
/// netmask, up. `gateway`, if any, becomes the default route.
pub(crate) fn configure_ipv4(
    ifname: &str,
    address: std::net::Ipv4Addr,
    netmask: std::net::Ipv4Addr,
    gateway: Option<std::net::Ipv4Addr>,
) -> Result<()> {
    // SAFETY: a plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: `fd` is a socket this function owns from here on.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let name = ifname.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(Error::other(format!("interface name {ifname} is too long")));
    }
    let request = |addr: Option<std::net::Ipv4Addr>| {
        // SAFETY: ifreq is plain old data; all zeros is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
            *dst = src as libc::c_char;
        }
        if let Some(a) = addr {
            req.ifr_ifru.ifru_addr = sockaddr(a);
        }
        req
    };
    let ioctl = |op: libc::c_ulong, req: &mut libc::ifreq| {
        // SAFETY: `req` is a valid ifreq for these SIOC* requests.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), op, req as *mut libc::ifreq) })
    };
    if address != std::net::Ipv4Addr::UNSPECIFIED {
        ioctl(libc::SIOCSIFADDR, &mut request(Some(address)))?;
        ioctl(libc::SIOCSIFNETMASK, &mut request(Some(netmask)))?;
    }
    let mut flags = request(None);
    ioctl(libc::SIOCGIFFLAGS, &mut flags)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        flags.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    ioctl(libc::SIOCSIFFLAGS, &mut flags)?;
    if let Some(gw) = gateway {
        // SAFETY: rtentry is plain old data; all zeros is a valid value.
        let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
        route.rt_dst = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
        route.rt_genmask = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
        route.rt_gateway = sockaddr(gw);
        route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // SAFETY: a valid rtentry for SIOCADDRT.
        check(unsafe {
            libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCADDRT,
                &mut route as *mut libc::rtentry,
            )
        })?;
    }
    Ok(())
}

fn sockaddr(a: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads
    // the address family first.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}
