/// The ELF patcher that lets TorchSharp's native bridge load on an older libstdc++: it reads every
/// symbol-version requirement of a shared library and marks only the named ones weak, byte for byte
/// leaving the rest of the image as it was; anything that is not an ELF64 little-endian image is refused.
module LongNet.Tests.NativeTests

open System
open System.IO
open System.Text
open Xunit
open LongNet

/// A minimal ELF64 image with a string table and a `.gnu.version_r` section needing
/// libstdc++.so.6 (GLIBCXX_3.4.32, GLIBCXX_3.4) and libm.so.6 (GLIBC_2.2.5, already weak).
let private image () =
    let bytes = Array.zeroCreate<byte>(256 + 3 * 64)

    let put16 (o: int) (v: int) =
        BitConverter.GetBytes(uint16 v).CopyTo(bytes, o)

    let put32 (o: int) (v: int) =
        BitConverter.GetBytes(uint32 v).CopyTo(bytes, o)

    let put64 (o: int) (v: int) =
        BitConverter.GetBytes(uint64 v).CopyTo(bytes, o)

    // header: magic, 64-bit, little-endian; section headers at 256, 64 bytes each, 3 of them
    [| 0x7fuy; byte 'E'; byte 'L'; byte 'F'; 2uy; 1uy; 1uy |].CopyTo(bytes, 0)
    put64 0x28 256
    put16 0x3A 64
    put16 0x3C 3

    // string table at 64
    let strings =
        "\000libstdc++.so.6\000GLIBCXX_3.4.32\000GLIBCXX_3.4\000libm.so.6\000GLIBC_2.2.5\000"

    let table = Encoding.ASCII.GetBytes strings
    table.CopyTo(bytes, 64)

    let str (s: string) =
        strings.IndexOf(s + "\000", StringComparison.Ordinal)

    // Verneed entries (16 bytes) and their Vernaux entries (16 bytes) at 160
    let need (o: int) (file: string) (count: int) (next: int) =
        put16 o 1
        put16 (o + 2) count
        put32 (o + 4) (str file)
        put32 (o + 8) 16
        put32 (o + 12) next

    let aux (o: int) (version: string) (flags: int) (next: int) =
        put16 (o + 4) flags
        put32 (o + 8) (str version)
        put32 (o + 12) next

    need 160 "libstdc++.so.6" 2 48
    aux 176 "GLIBCXX_3.4.32" 0 16
    aux 192 "GLIBCXX_3.4" 0 0
    need 208 "libm.so.6" 1 0
    aux 224 "GLIBC_2.2.5" 2 0

    // section 1: the string table; section 2: the version requirements (link 1, 2 entries)
    let section (i: int) (kind: uint32) (offset: int) (size: int) (link: int) (info: int) =
        let h = 256 + i * 64
        BitConverter.GetBytes(kind).CopyTo(bytes, h + 4)
        put64 (h + 0x18) offset
        put64 (h + 0x20) size
        put32 (h + 0x28) link
        put32 (h + 0x2C) info

    section 1 3u 64 table.Length 0 0
    section 2 0x6ffffffeu 160 80 1 2
    bytes

let private summary (needs: Native.Elf.VersionNeed list) =
    needs |> List.map (fun n -> n.File, n.Version, n.Weak)

[<Fact>]
let ``every version requirement is read with its file and weakness`` () =
    match Native.Elf.versionNeeds (image ()) with
    | Ok needs ->
        Assert.Equal<(string * string * bool) list>(
            [
                "libstdc++.so.6", "GLIBCXX_3.4.32", false
                "libstdc++.so.6", "GLIBCXX_3.4", false
                "libm.so.6", "GLIBC_2.2.5", true
            ],
            summary needs
        )
    | Error e -> failwith e

[<Fact>]
let ``weakening marks only the named requirement and changes no other byte`` () =
    let original = image ()

    match Native.Elf.weaken (set [ Native.WeakenableVersion ]) original with
    | Ok patched ->
        Assert.Equal<(string * string * bool) list>(
            [
                "libstdc++.so.6", "GLIBCXX_3.4.32", true
                "libstdc++.so.6", "GLIBCXX_3.4", false
                "libm.so.6", "GLIBC_2.2.5", true
            ],
            summary (Native.Elf.versionNeeds patched |> Result.defaultWith failwith)
        )

        let changed =
            [ 0 .. original.Length - 1 ]
            |> List.filter (fun i -> original.[i] <> patched.[i])

        // the flags field (2 bytes) of the first Vernaux: only its weak bit
        Assert.Equal<int list>([ 176 + 4 ], changed)
        Assert.Equal(0x2uy, patched.[180])
        // the input is not modified
        Assert.Equal(0uy, original.[180])
    | Error e -> failwith e

[<Fact>]
let ``weakening a version the image does not need returns it unchanged`` () =
    let original = image ()

    match Native.Elf.weaken (set [ "GLIBCXX_9.9" ]) original with
    | Ok patched -> Assert.Equal<byte[]>(original, patched)
    | Error e -> failwith e

[<Fact>]
let ``an image without version requirements has none`` () =
    let bytes = image ()
    // drop the version section: 2 sections only
    BitConverter.GetBytes(2us).CopyTo(bytes, 0x3C)

    match Native.Elf.versionNeeds bytes with
    | Ok needs -> Assert.Empty needs
    | Error e -> failwith e

[<Fact>]
let ``files that are not ELF64 little-endian, or are cut short, are refused`` () =
    let notElf = Encoding.ASCII.GetBytes(String.replicate 10 "not an ELF file ")
    Assert.True((Native.Elf.versionNeeds notElf).IsError)

    let bigEndian = image ()
    bigEndian.[5] <- 2uy
    Assert.True((Native.Elf.versionNeeds bigEndian).IsError)

    let elf32 = image ()
    elf32.[4] <- 1uy
    Assert.True((Native.Elf.weaken (set [ Native.WeakenableVersion ]) elf32).IsError)

    let truncated = (image ()).[0..200]
    Assert.True((Native.Elf.versionNeeds truncated).IsError)

[<Fact>]
let ``the TorchSharp bridge this build loads needs the version the patcher may weaken, and nothing else is weakened``
    ()
    =
    let folder =
        Path.GetDirectoryName(typeof<TorchSharp.torch.Tensor>.Assembly.Location)

    // TorchSharp-cpu's bridge is copied into the test output (runtimes/linux-x64/native)
    let file =
        Directory.GetFiles(folder, "libLibTorchSharp.so", SearchOption.AllDirectories)
        |> Array.tryHead
        |> Option.defaultWith (fun () -> failwith $"no libLibTorchSharp.so under {folder}")

    let needs =
        Native.Elf.versionNeeds (File.ReadAllBytes file) |> Result.defaultWith failwith

    Assert.Contains(needs, fun n -> n.Version = Native.WeakenableVersion)

    let patched =
        Native.Elf.weaken (set [ Native.WeakenableVersion ]) (File.ReadAllBytes file)
        |> Result.defaultWith failwith

    let after = Native.Elf.versionNeeds patched |> Result.defaultWith failwith

    for before, now in List.zip needs after do
        Assert.Equal(before.Version, now.Version)
        Assert.Equal(before.Weak || before.Version = Native.WeakenableVersion, now.Weak)
