using System.Collections.Generic;
using System.Linq;
using Microsoft.FSharp.Core;
using FsPlan = global::LongNet.Plan;

namespace LongNet.CSharp;

/// <summary>
/// The plan of a dilated attention for N positions, H heads and head dimension d (from
/// <see cref="DilatedAttention.Plan"/>): coverage, attended pairs, FLOPs, a memory estimate and the
/// attention graph's diameter. Immutable; computed by pure index math.
/// </summary>
public sealed class AttentionPlan
{
    private readonly FsPlan.PlanSummary summary;

    internal AttentionPlan(FsPlan.PlanSummary summary)
    {
        this.summary = summary;
        Groups = Interop.ReadOnly(
            summary.Groups.Select(g => new GroupPlan(g.SegmentLength, g.DilationRate, g.Segments, g.CoveredPairs, g.AttendedPairs)));

        if (OptionModule.IsNone(summary.Diameter))
        {
            Connectivity = Connectivity.NotComputed;
        }
        else if (OptionModule.IsSome(summary.Diameter.Value))
        {
            Connectivity = Connectivity.Connected;
            Diameter = summary.Diameter.Value.Value;
        }
        else
        {
            Connectivity = Connectivity.Disconnected;
        }
    }

    /// <summary>The sequence length N.</summary>
    public int SequenceLength => summary.N;

    /// <summary>The number of heads H.</summary>
    public int Heads => summary.Heads;

    /// <summary>The head dimension d.</summary>
    public int HeadDim => summary.HeadDim;

    /// <summary>Whether the attention is causal.</summary>
    public bool IsCausal => summary.Causal;

    /// <summary>One line per group, in the configuration's order.</summary>
    public IReadOnlyList<GroupPlan> Groups { get; }

    /// <summary>Attended (query, key) pairs over all groups, heads and segments.</summary>
    public long AttendedPairs => summary.Pairs;

    /// <summary>Attended pairs per position; bounded as N grows (the linear cost).</summary>
    public double PairsPerToken => summary.PairsPerToken;

    /// <summary>Forward FLOPs on the attended pairs: 4·pairs·d (QKᵀ and PV, two FLOPs per multiply-add).</summary>
    public double Flops => summary.Flops;

    /// <summary>Forward FLOPs of dense attention: 4·d·H·N² (causal: N(N+1)/2 pairs per head).</summary>
    public double DenseFlops => summary.DenseFlops;

    /// <summary>
    /// Memory estimate of the fused forward in bytes, for float32 and batch 1: inputs and output, the
    /// largest group's gathered blocks, and one log-sum-exp per group and position.
    /// </summary>
    public double MemoryBytes => summary.MemoryBytes;

    /// <summary>The (head, position) pairs that no group covers (their outputs are 0).</summary>
    public long UncoveredPairs => summary.UncoveredPairs;

    /// <summary><see cref="UncoveredPairs"/> as a share of H·N, in [0, 1].</summary>
    public double UncoveredShare => summary.UncoveredShare;

    /// <summary>Whether the diameter was computed and whether the attention graph is connected.</summary>
    public Connectivity Connectivity { get; }

    /// <summary>
    /// The diameter of the attention graph in hops (the longest shortest path; causal: along edges from
    /// earlier to later positions), or null when it was not computed or the graph is disconnected (see
    /// <see cref="Connectivity"/>).
    /// </summary>
    public int? Diameter { get; }

    /// <summary>The plan as a readable multi-line table (what <c>longnet plan</c> prints).</summary>
    /// <returns>The table.</returns>
    public string Format() => FsPlan.format(summary);

    /// <summary>The plan as a readable multi-line table (see <see cref="Format"/>).</summary>
    /// <returns>The table.</returns>
    public override string ToString() => Format();
}

/// <summary>One group's line of an <see cref="AttentionPlan"/>.</summary>
public sealed record GroupPlan
{
    internal GroupPlan(int segmentLength, int dilationRate, long segments, long coveredPairs, long attendedPairs)
    {
        SegmentLength = segmentLength;
        DilationRate = dilationRate;
        Segments = segments;
        CoveredPairs = coveredPairs;
        AttendedPairs = attendedPairs;
    }

    /// <summary>The segment length w.</summary>
    public int SegmentLength { get; }

    /// <summary>The dilation rate r.</summary>
    public int DilationRate { get; }

    /// <summary>The number of segments ceil(N / w).</summary>
    public long Segments { get; }

    /// <summary>The (head, position) pairs this group keeps.</summary>
    public long CoveredPairs { get; }

    /// <summary>The (query, key) pairs this group attends, over all heads and segments.</summary>
    public long AttendedPairs { get; }
}
