/// This process's resident memory (Linux `/proc/self/status`), for measuring the peak of a piece of work.
module LongNet.ProcessMemory

open System
open System.IO

/// The kB value of a `/proc` status line such as "VmHWM:\t12345678 kB" (no space when the value is wide).
let kbOfLine (line: string) : float =
    float (line.Split([| ' '; '\t' |], StringSplitOptions.RemoveEmptyEntries).[1])

/// A field of `/proc/self/status` in kB ("VmRSS", "VmHWM", …); None where it cannot be read.
let residentKb (field: string) : float option =
    try
        File.ReadLines "/proc/self/status"
        |> Seq.tryFind (fun l -> l.StartsWith(field + ":"))
        |> Option.map kbOfLine
    with _ ->
        None

/// The memory the machine can still give without swapping (`MemAvailable` of `/proc/meminfo`), in kB;
/// None where it cannot be read.
let machineAvailableKb () : float option =
    try
        File.ReadLines "/proc/meminfo"
        |> Seq.tryFind (fun l -> l.StartsWith "MemAvailable:")
        |> Option.map kbOfLine
    with _ ->
        None

/// The peak of one piece of work: resident memory at its start and the peak during it, in MB.
type Peak =
    {
        /// Resident memory when the work started, in MB.
        BaselineMb: float
        /// The highest resident memory during the work, in MB.
        PeakMb: float
    }

    /// The peak above the baseline, in MB.
    member p.AboveBaselineMb = max 0.0 (p.PeakMb - p.BaselineMb)

/// Runs `work` and returns its resident-memory peak (None where the peak cannot be reset and read).
let measure (work: unit -> unit) : Peak option =
    GC.Collect()

    let reset =
        try
            // opened for writing only, without creating or truncating: all this file needs
            use file = new FileStream("/proc/self/clear_refs", FileMode.Open, FileAccess.Write)
            file.Write([| byte '5' |], 0, 1)
            true
        with _ ->
            false

    let baseline = residentKb "VmRSS"
    work ()
    let peak = residentKb "VmHWM"

    match reset, baseline, peak with
    | true, Some b, Some p ->
        Some
            {
                BaselineMb = b / 1024.0
                PeakMb = p / 1024.0
            }
    | _ -> None
