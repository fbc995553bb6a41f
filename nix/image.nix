# The worker image, assembled in Nix's sandbox from pinned inputs only: no
# nixpkgs, no channel, nothing but builtins and <nix/fetchurl.nix>.
#
#   - every Debian package of image/packages.lock is a fixed-output
#     derivation, fetched by Nix's built-in fetcher and checked against
#     the lock's sha256;
#   - the worker, its init and the builder (provenix-image, linked
#     statically so that it runs alone in the sandbox) are the binaries
#     `./run image` builds with Cargo from the same commit, themselves bit
#     for bit reproducible (docs/image.md); their hashes are part of this
#     derivation;
#   - the builder reads the recipe (image/image.toml, image/rootfs) and
#     writes the image to $out, with no network, no clock and no host tool.
#
# `./run image` calls this; `nix-build --check` with the same arguments
# builds it again and fails if a single byte differs (image/reproducible.sh).
#
#   nix-build nix/image.nix --argstr worker PATH --argstr init PATH \
#     --argstr builder PATH --argstr commit COMMIT [--arg records '[ "k=v" ]']
#
# A package the archive no longer has: put the .deb in the store yourself,
# named by its sha256 as the lock pins it:
#   nix-store --add-fixed sha256 <sha256>.deb
{ worker
, init
, builder
, commit
, records ? [ ]
, mirror ? "http://deb.debian.org/debian"
}:
let
  inherit (builtins) elemAt filter isString length map split substring;

  # packages.lock: `name version sha256 pool-path` per line, `#` comments.
  words = line: filter (w: isString w && w != "") (split "[ \t]+" line);
  pins = filter (p: length p == 4) (map words
    (filter (l: isString l && substring 0 1 l != "#") (split "\n" (builtins.readFile ../image/packages.lock))));
  deb = p:
    let sha256 = elemAt p 2; in
    "${sha256}=${import <nix/fetchurl.nix> {
      url = "${mirror}/${elemAt p 3}";
      inherit sha256;
      name = "${sha256}.deb";
    }}";

  # The recipe: image.toml, the lock and rootfs/, and nothing else of image/.
  recipe = builtins.path {
    name = "provenix-image-recipe";
    path = ../image;
    filter = path: type:
      let rel = substring (builtins.stringLength (toString ../image) + 1) (-1) path; in
      rel == "image.toml" || rel == "packages.lock" || rel == "rootfs"
      || substring 0 7 rel == "rootfs/";
  };
  binary = name: path: builtins.path { inherit name path; };
in
derivation {
  name = "provenix-worker-image-${substring 0 12 commit}";
  system = "x86_64-linux";
  builder = binary "provenix-image" builder;
  args = [
    "build"
    "--recipe" "${recipe}/image.toml"
    "--lock" "${recipe}/packages.lock"
    "--rootfs" "${recipe}/rootfs"
    "--worker" (binary "provenix-worker" worker)
    "--init" (binary "provenix-init" init)
    "--commit" commit
    "--out" (builtins.placeholder "out")
  ]
  ++ builtins.concatMap (r: [ "--record" r ]) records
  ++ map (p: "--deb=${deb p}") pins;
}
