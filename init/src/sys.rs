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

/// A socket for the classic interface ioctls.
fn ioctl_socket() -> Result<std::os::fd::OwnedFd> {
    // SAFETY: a plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: `fd` is a socket the caller owns from here on.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// An ifreq naming `ifname`.
fn ifreq(ifname: &str) -> Result<libc::ifreq> {
    let name = ifname.as_bytes();
    if name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(Error::other(format!("{ifname:?} is not an interface name")));
    }
    // SAFETY: ifreq is plain old data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl(sock: &std::os::fd::OwnedFd, op: libc::c_ulong, req: &mut libc::ifreq) -> Result<()> {
    // SAFETY: `req` is a valid ifreq for the SIOC* request `op`.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), op, req as *mut libc::ifreq) })
}

/// Bring `ifname` up, with `address` and `netmask` unless the address is
/// 0.0.0.0 (up without an address, as DHCP needs it).
pub(crate) fn configure_ipv4(
    ifname: &str,
    address: std::net::Ipv4Addr,
    netmask: std::net::Ipv4Addr,
) -> Result<()> {
    let sock = ioctl_socket()?;
    if address != std::net::Ipv4Addr::UNSPECIFIED {
        let mut req = ifreq(ifname)?;
        req.ifr_ifru.ifru_addr = sockaddr(address);
        ioctl(&sock, libc::SIOCSIFADDR, &mut req)?;
        let mut req = ifreq(ifname)?;
        req.ifr_ifru.ifru_netmask = sockaddr(netmask);
        ioctl(&sock, libc::SIOCSIFNETMASK, &mut req)?;
    }
    let mut flags = ifreq(ifname)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut flags)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        flags.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut flags)
}

/// Set the MTU of `ifname`.
pub(crate) fn set_mtu(ifname: &str, mtu: u16) -> Result<()> {
    let mut req = ifreq(ifname)?;
    req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    ioctl(&ioctl_socket()?, libc::SIOCSIFMTU, &mut req)
}

/// The default route through `gateway` on `ifname`. A gateway outside the
/// interface's subnet (clouds hand out /32 addresses) first gets a host
/// route of its own, as on-link.
pub(crate) fn default_route(
    ifname: &str,
    gateway: std::net::Ipv4Addr,
    on_link_first: bool,
) -> Result<()> {
    let sock = ioctl_socket()?;
    let dev = cstr(ifname)?;
    let add = |dst, mask, gw: Option<std::net::Ipv4Addr>, flags| {
        // SAFETY: rtentry is plain old data; all zeros is a valid value.
        let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
        route.rt_dst = sockaddr(dst);
        route.rt_genmask = sockaddr(mask);
        route.rt_gateway = sockaddr(gw.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED));
        route.rt_flags = flags;
        route.rt_dev = dev.as_ptr().cast_mut();
        // SAFETY: a valid rtentry whose rt_dev outlives the call.
        check(unsafe {
            libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCADDRT,
                &mut route as *mut libc::rtentry,
            )
        })
    };
    if on_link_first {
        add(
            gateway,
            std::net::Ipv4Addr::BROADCAST,
            None,
            libc::RTF_UP | libc::RTF_HOST,
        )?;
    }
    let any = std::net::Ipv4Addr::UNSPECIFIED;
    add(any, any, Some(gateway), libc::RTF_UP | libc::RTF_GATEWAY)
}

/// SO_BINDTODEVICE: the socket sends and receives on `ifname` only (a DHCP
/// client's, before the interface has an address or a route).
pub(crate) fn bind_to_device(socket: &std::net::UdpSocket, ifname: &str) -> Result<()> {
    let name = cstr(ifname)?;
    let len = libc::socklen_t::try_from(name.as_bytes_with_nul().len()).map_err(Error::other)?;
    // SAFETY: a valid descriptor and a NUL-terminated name of `len` bytes.
    check(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            len,
        )
    })
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
