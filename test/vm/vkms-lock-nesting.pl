#!/usr/bin/perl
# Patches vkms_crtc.c (test/vm/build.sh, stage 2) so that a commit spanning several CRTCs can
# no longer wedge the guest. vkms takes each CRTC's output lock with spin_lock_irq() in
# atomic_begin and drops it with spin_unlock_irq() in atomic_flush. The atomic helper calls
# every CRTC's begin before any flush, so the first flush turns interrupts back on while the
# other CRTCs' locks are still held; when one of their vblank hrtimers then fires on that CPU,
# it spins on its lock forever (seen as a wedged guest in the 3-CRTC video case: sysrq showed
# vkms_crtc_handle_vblank_timeout spinning, test/vm/README.md). Here interrupts go off at the
# first begin on a CPU and come back on after the last flush on it (a per-CPU nesting count;
# nothing migrates while interrupts are off). The test build only: the appliance runs real GPUs.
use strict;
use warnings;
my $file = shift or die "usage: vkms-lock-nesting.pl vkms_crtc.c\n";
local $/;
open my $in, '<', $file or die "$file: $!\n";
my $c = <$in>;
close $in;
my $n = 0;
$n += ($c =~ s/(static void vkms_crtc_atomic_begin\(.*?\{.*?)spin_lock_irq\(&vkms_output->lock\);/${1}unsigned long flags;\n\n\tlocal_irq_save(flags);\n\tif (this_cpu_inc_return(vkms_commit_nest) == 1)\n\t\tthis_cpu_write(vkms_commit_irqflags, flags);\n\tspin_lock(&vkms_output->lock);/s);
$n += ($c =~ s/(static void vkms_crtc_atomic_flush\(.*?)spin_unlock_irq\(&vkms_output->lock\);/${1}spin_unlock(&vkms_output->lock);\n\tif (this_cpu_dec_return(vkms_commit_nest) == 0)\n\t\tlocal_irq_restore(this_cpu_read(vkms_commit_irqflags));/s);
$n += ($c =~ s/(#include "vkms_drv.h"\n)/${1}\n\/* multihead test build: see test\/vm\/vkms-lock-nesting.pl *\/\nstatic DEFINE_PER_CPU(unsigned int, vkms_commit_nest);\nstatic DEFINE_PER_CPU(unsigned long, vkms_commit_irqflags);\n/);
$n == 3 or die "vkms-lock-nesting.pl: $file is not the vkms_crtc.c it was written for ($n of 3 places found)\n";
open my $out, '>', $file or die "$file: $!\n";
print $out $c;
close $out;
