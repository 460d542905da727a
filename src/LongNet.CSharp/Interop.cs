using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using FsConfigError = global::LongNet.ConfigError;
using FsHeadOffsets = global::LongNet.HeadOffsets;
using FsKernel = global::LongNet.DilatedAttention.Kernel;
using FsPosition = global::LongNet.Modules.PositionEncoding;
using FsRope = global::LongNet.Modules.Rope;

namespace LongNet.CSharp;

/// <summary>Conversions between the facade's C# types and the F# core's; never public.</summary>
internal static class Interop
{
    internal static FSharpList<T> ToFSharpList<T>(IEnumerable<T> items) => ListModule.OfSeq(items);

    internal static FSharpOption<T>? ToOption<T>(T? value)
        where T : struct => value.HasValue ? FSharpOption<T>.Some(value.Value) : FSharpOption<T>.None;

    internal static T? ToNullable<T>(FSharpOption<T>? option)
        where T : struct => OptionModule.IsSome(option) ? option!.Value : null;

    internal static string? ToNullableString(FSharpOption<string>? option) =>
        OptionModule.IsSome(option) ? option!.Value : null;

    internal static FsHeadOffsets ToFSharp(HeadOffsets offsets) =>
        offsets switch
        {
            HeadOffsets.Paper => FsHeadOffsets.Paper,
            HeadOffsets.Blocks => FsHeadOffsets.Blocks,
            _ => throw new ArgumentOutOfRangeException(nameof(offsets), offsets, "offsets must be Paper or Blocks."),
        };

    internal static HeadOffsets FromFSharp(FsHeadOffsets offsets) =>
        offsets.IsPaper ? HeadOffsets.Paper : HeadOffsets.Blocks;

    internal static FsKernel ToFSharp(AttentionKernel kernel) =>
        kernel switch
        {
            AttentionKernel.Fused => FsKernel.Fused,
            AttentionKernel.Explicit => FsKernel.Explicit,
            _ => throw new ArgumentOutOfRangeException(nameof(kernel), kernel, "kernel must be Fused or Explicit here."),
        };

    /// <summary>
    /// The C# parameter a core configuration error is about: the core names some parameters after its
    /// own arguments or JSON fields (<c>dilationRates</c>, <c>dilationRate</c>, <c>segmentLength</c>,
    /// <c>positionScaling.scale</c>, <c>selectMerge.blockSize</c>…); the builders' are <c>segmentLengths</c>,
    /// <c>rates</c>, <c>scale</c>, <c>blockSize</c>…
    /// </summary>
    internal static string ParameterName(string coreParameter) =>
        coreParameter switch
        {
            "dilationRates" or "dilationRate" => "rates",
            "groups" => "segmentLengths",
            "segmentLength" => "segmentLengths",
            "embedDim" => "embeddingDim",
            "vocabSize" => "vocabularySize",
            "seqLen" => "sequenceLength",
            "gradClip" => "gradientClip",
            "evalTokens" => "evaluationTokens",
            "positionScaling.method" => "position",
            "positionScaling.scale" => "scale",
            "positionScaling.trainedLength" => "trainedLength",
            "positionScaling.yarnAlpha" => "alpha",
            "positionScaling.yarnBeta" => "beta",
            "positionScaling.crdMinScale" => "minScale",
            "positionScaling.crdMaxScale" => "maxScale",
            "positionScaling.crdCycleSteps" => "cycleSteps",
            "positionScaling.crdMinLength" => "minLength",
            "selectMerge.blockSize" => "blockSize",
            "selectMerge.topK" => "topK",
            "selectMerge.mergeFactor" => "mergeFactor",
            "selectMerge.renumberPositions" => "renumberPositions",
            _ => coreParameter,
        };

    /// <summary>
    /// The core's groups from parallel segment lengths and rates (checked by the caller beforehand); for dense
    /// attention, which ignores them, groups that are not valid become the core's defaults.
    /// </summary>
    internal static FSharpList<global::LongNet.Group> ToFSharpGroups(int[] segmentLengths, int[] rates, bool dense)
    {
        if (segmentLengths.Length == rates.Length)
        {
            var groups = global::LongNet.Groups.ofPairs(ToFSharpList(segmentLengths.Zip(rates, (w, r) => Tuple.Create(w, r))));
            if (groups.IsOk)
            {
                return groups.ResultValue;
            }

            if (!dense)
            {
                throw ToException(groups.ErrorValue);
            }
        }
        else if (!dense)
        {
            throw new ArgumentException($"rates must have one entry per segment length ({segmentLengths.Length}), got {rates.Length}.", "rates");
        }

        return global::LongNet.Modules.ModelConfigModule.defaults.Groups;
    }

    /// <summary>Parallel segment lengths and rates with one group (checked by the core's <c>Group.Create</c>) appended.</summary>
    internal static (int[] SegmentLengths, int[] Rates) AddGroup(int[] segmentLengths, int[] rates, int segmentLength, int dilationRate)
    {
        if (segmentLengths.Length != rates.Length)
        {
            throw new InvalidOperationException(
                $"Group cannot follow {segmentLengths.Length} segment lengths and {rates.Length} rates; give groups one way: Group(…) calls, or Segments(…) with Rates(…).");
        }

        var group = global::LongNet.Group.Create(segmentLength, dilationRate);
        if (group.IsError)
        {
            var error = group.ErrorValue;
            var parameter = error.Parameter == "segmentLength" ? nameof(segmentLength) : nameof(dilationRate);
            throw new ArgumentOutOfRangeException(parameter, parameter == nameof(segmentLength) ? segmentLength : dilationRate, error.Message);
        }

        return ([.. segmentLengths, segmentLength], [.. rates, dilationRate]);
    }

    /// <summary>A core configuration error as the exception a C# caller expects.</summary>
    internal static ArgumentException ToException(FsConfigError error) =>
        new(error.Message, ParameterName(error.Parameter));

    /// <summary>RoPE's default base θ.</summary>
    internal static readonly double DefaultRopeBase = FsRope.defaultRope.Base;

    /// <summary>xPos's default scale base γ.</summary>
    internal static readonly double DefaultXPosScaleBase = FsRope.defaultXPos.ScaleBase;

    /// <summary>The core's distance-bias settings for a form and slope range.</summary>
    internal static global::LongNet.Modules.DistanceBiasSettings ToFSharp(DistanceBiasForm form, double maxSlope, double minSlope) =>
        new(
            form switch
            {
                DistanceBiasForm.Logarithmic => global::LongNet.BiasForm.LogarithmicBias,
                DistanceBiasForm.Linear => global::LongNet.BiasForm.LinearBias,
                _ => throw new ArgumentOutOfRangeException(nameof(form), form, "form must be Logarithmic or Linear."),
            },
            maxSlope,
            minSlope);

    internal static FsPosition ToFSharp(PositionEncoding position, double ropeBase, double xposScaleBase, global::LongNet.Modules.DistanceBiasSettings? distanceBias = null) =>
        position switch
        {
            PositionEncoding.None => FsPosition.NoPosition,
            PositionEncoding.DistanceBias => FsPosition.NewDistanceBiased(distanceBias ?? FsRope.defaultDistanceBias),
            PositionEncoding.Rope => FsPosition.NewRope(new global::LongNet.Modules.RopeSettings(ropeBase, global::LongNet.Modules.PositionScaling.Unscaled)),
            PositionEncoding.XPos => FsPosition.NewXPos(new global::LongNet.Modules.XPosSettings(ropeBase, xposScaleBase)),
            _ => throw new ArgumentOutOfRangeException(nameof(position), position, "position must be None, Rope, XPos or DistanceBias."),
        };

    /// <summary>The C# scheme, θ and γ of a core position encoding (defaults where the scheme has none).</summary>
    internal static (PositionEncoding Position, double RopeBase, double XPosScaleBase) FromFSharp(FsPosition position) =>
        position switch
        {
            FsPosition.Rope rope => (PositionEncoding.Rope, rope.Item.Base, DefaultXPosScaleBase),
            FsPosition.XPos xpos => (PositionEncoding.XPos, xpos.Item.Base, xpos.Item.ScaleBase),
            FsPosition.DistanceBiased => (PositionEncoding.DistanceBias, DefaultRopeBase, DefaultXPosScaleBase),
            _ => (PositionEncoding.None, DefaultRopeBase, DefaultXPosScaleBase),
        };

    /// <summary>The core's run configuration of a preset.</summary>
    internal static global::LongNet.Training.RunConfig PresetRun(Preset preset) =>
        preset switch
        {
            Preset.Tiny => global::LongNet.Training.RunConfigModule.tiny,
            Preset.Demo => global::LongNet.Training.RunConfigModule.demo,
            Preset.Small => global::LongNet.Training.RunConfigModule.small,
            _ => throw new ArgumentOutOfRangeException(nameof(preset), preset, "preset must be Tiny, Demo or Small."),
        };

    /// <summary>A C# array as a read-only list (copied).</summary>
    internal static IReadOnlyList<T> ReadOnly<T>(IEnumerable<T> items) => Array.AsReadOnly(items.ToArray());
}
